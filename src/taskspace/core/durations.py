"""Human durations: ``90s``, ``30m``, ``24h``, ``2d``, ``1h30m`` or a plain number of seconds."""

from __future__ import annotations

import re

from taskspace.core.errors import InvalidInput

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str | int | float, *, field: str = "duration") -> float:
    """Seconds in ``value``; InvalidInput when it is not a duration."""
    if isinstance(value, bool):
        raise InvalidInput(f"{value!r} is not a duration.", field=field)
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            parts = _PART.findall(text)
            if not text or "".join(n + u for n, u in parts) != text:
                raise InvalidInput(f"{value!r} is not a duration.",
                                   hint="Use e.g. 90s, 30m, 24h, 2d or 1h30m.", field=field)
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds < 0 or seconds > 10 * 365 * 86400:
        raise InvalidInput(f"{value!r} is out of range.", hint="Use a duration between 0 and 10 years.",
                           field=field)
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
