"""Percentiles and summaries of samples (no third-party statistics package needed)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The ``fraction`` quantile by linear interpolation between closest ranks (the default
    of numpy and of Excel's PERCENTILE.INC); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = fraction * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Iterable[float]) -> dict[str, Any]:
    """n, p50, p95, min, max and mean of ``values`` (rounded to the millisecond)."""
    data = [float(v) for v in values]
    if not data:
        return {"n": 0, "p50": None, "p95": None, "min": None, "max": None, "mean": None}
    return {"n": len(data), "p50": _round(percentile(data, 0.5)), "p95": _round(percentile(data, 0.95)),
            "min": _round(min(data)), "max": _round(max(data)), "mean": _round(sum(data) / len(data))}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
