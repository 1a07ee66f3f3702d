"""Percentiles and medians of samples."""

import statistics
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Linear-interpolated percentile (like numpy's default); None for no samples."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float], pcts: Sequence[float] = (50, 95, 99)) -> dict[str, Any]:
    """{n, p50, p95, p99, max} of latency samples in ms, rounded to 0.01."""
    out: dict[str, Any] = {"n": len(values)}
    for p in pcts:
        v = percentile(values, p)
        out[f"p{p:g}"] = None if v is None else round(v, 2)
    out["max"] = round(max(values), 2) if values else None
    return out


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


def median_of(runs: Sequence[dict[str, Any]], *path: str) -> float | None:
    """Median across runs of the value at `path` (e.g. "submit_ms", "p99")."""
    values = []
    for run in runs:
        v: Any = run
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
        values.append(v)
    return median(values)
