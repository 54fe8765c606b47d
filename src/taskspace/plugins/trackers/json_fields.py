"""Reading fields out of trackers' JSON, which is loosely typed and changes between versions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from taskspace.core.errors import InvalidInput


def timestamp(value: Any, *, field: str, tracker: str) -> datetime:
    """An aware datetime from ISO 8601 (``2024-01-05T10:30:00.000+0000``, ``…Z``) or the older
    GitLab webhook form ``2013-12-03 17:23:34 UTC``; InvalidInput when there is none."""
    if isinstance(value, str) and value:
        text = value.strip()
        if text.endswith(" UTC"):
            text = text[:-4] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise InvalidInput(f"{tracker} sent an issue whose {field} is not a timestamp ({value!r}).",
                       hint="Check that the tracker's API version is a supported one.")


def text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
