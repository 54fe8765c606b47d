"""Human durations: ``90s``, ``30m``, ``24h``, ``2d``, ``1h30m`` or a plain number of seconds."""

from __future__ import annotations

import math
import re
from typing import Any

from taskspace.core.errors import InvalidInput

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


HINT = "Use seconds as a number (2, 0.5) or a string such as 500ms, 2s, 30m, 24h, 2d or 1m30s."


def parse_duration(value: Any, *, field: str = "duration") -> float:
    """Seconds in ``value``: a number of seconds, or a string such as ``500ms``, ``24h`` or
    ``1m30s`` (a string of digits alone counts as seconds). InvalidInput for anything else,
    and for negative, infinite or NaN values."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        parts = _PART.findall(text)
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif text and "".join(n + u for n, u in parts) == text:
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
        else:
            shown = repr(value) if len(value) <= 40 else repr(value[:37] + "...")
            raise InvalidInput(f"{shown} is not a duration.", hint=HINT, field=field)
    else:
        raise InvalidInput(f"A {type(value).__name__} is not a duration.", hint=HINT, field=field)
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidInput(f"{value!r} is not a duration of zero or more seconds.", hint=HINT, field=field)
    if seconds > 10 * 365 * 86400:
        raise InvalidInput(f"{value!r} is longer than ten years.", hint=HINT, field=field)
    return seconds


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(out)
