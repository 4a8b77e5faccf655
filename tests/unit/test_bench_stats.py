"""Nearest-rank percentiles (`bazar.bench.stats`): values that were really observed."""

from __future__ import annotations

import pytest

from bazar.bench.stats import QUANTILE_PERCENTS, Summary, percentile, summarize


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert [percentile(values, p) for p in (50, 90, 99, 100)] == [50, 90, 99, 100]
    assert percentile([7], 50) == 7
    assert percentile([1, 2], 50) == 1
    assert percentile([1, 2], 51) == 2
    assert percentile(values, 0) == 1


def test_percentile_of_no_values_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


@pytest.mark.parametrize(("count", "expected"), [(1000, 999), (10_000, 9990), (100, 100), (7, 7)])
def test_p99_9_is_the_value_at_rank_ceil_0_999_n(count: int, expected: int) -> None:
    # 1000 * 99.9 / 100 is 999.0000000000001 in floating point: the rank must still be 999
    assert percentile(list(range(1, count + 1)), 99.9) == expected


def test_summarize_reports_milliseconds_in_any_order() -> None:
    summary = summarize(reversed([ms * 1_000_000 for ms in range(1, 1001)]))
    assert summary.count == 1000
    assert (summary.p50_ms, summary.p90_ms, summary.p99_ms) == (500.0, 900.0, 990.0)
    assert (summary.p999_ms, summary.max_ms) == (999.0, 1000.0)
    assert [p for p, _ in summary.quantiles_ms] == list(QUANTILE_PERCENTS)
    assert summary.quantiles_ms[0] == (0.0, 1.0)
    assert summary.quantiles_ms[-1] == (100.0, 1000.0)


def test_summarize_of_nothing_is_all_none() -> None:
    assert summarize([]) == Summary(0, None, None, None, None, None)


def test_quantiles_are_ascending_and_hold_the_reported_percentiles() -> None:
    assert list(QUANTILE_PERCENTS) == sorted(set(QUANTILE_PERCENTS))
    assert {0.0, 50.0, 90.0, 99.0, 99.9, 100.0} <= set(QUANTILE_PERCENTS)
