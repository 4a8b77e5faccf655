"""Latency statistics from exact per-request times: nearest-rank percentiles, no estimation.

Every measured request's latency is kept (as int nanoseconds), so a percentile is a value that
was really observed: the smallest latency that is >= p % of them. The quantiles kept in the
JSON (QUANTILE_PERCENTS) are enough to draw a distribution without storing every request.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

NS_PER_MS = 1_000_000
QUANTILE_PERCENTS = (
    0.0,
    1.0,
    2.5,
    *(float(p) for p in range(5, 100, 5)),
    97.5,
    99.0,
    99.5,
    99.9,
    99.95,
    99.99,
    100.0,
)
"""The distribution kept per run (for the CDF plots): dense where tails are."""


@dataclass(frozen=True, slots=True)
class Summary:
    """Latency percentiles (nearest rank) in milliseconds; None when nothing was measured."""

    count: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    max_ms: float | None
    quantiles_ms: tuple[tuple[float, float], ...] = ()  # (percent, ms) for QUANTILE_PERCENTS


def percentile(sorted_values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile of non-empty ascending values: the smallest value that is
    >= p % of them (so p99 of 100 values is the 99th, and p100 is the maximum).

    Raises: ValueError for no values.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    assert 0 <= p <= 100, p
    # round() first: 1000 * 99.9 / 100 is 999.0000000000001 in floating point, not 999.
    rank = math.ceil(round(len(sorted_values) * p / 100, 9))
    rank = min(max(1, rank), len(sorted_values))
    return sorted_values[rank - 1]


def summarize(latencies_ns: Iterable[int]) -> Summary:
    """Percentiles of all the latencies given, in any order."""
    values = sorted(latencies_ns)
    if not values:
        return Summary(0, None, None, None, None, None)

    def ms(p: float) -> float:
        return percentile(values, p) / NS_PER_MS

    quantiles = tuple((p, ms(p)) for p in QUANTILE_PERCENTS)
    return Summary(len(values), ms(50), ms(90), ms(99), ms(99.9), values[-1] / NS_PER_MS, quantiles)
