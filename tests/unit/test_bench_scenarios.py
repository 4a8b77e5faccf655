"""The plan of a bench (`bazar.bench.scenarios`, `load.split`): checked before anything runs."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from bazar.bench import scenarios
from bazar.bench.load import split
from bazar.bench.scenarios import BenchError, FailoverOptions, plan

URL = "http://127.0.0.1:9102"


def names(url: str = URL, **options: Any) -> list[tuple[str, int, int]]:
    arguments: dict[str, Any] = {
        "scenarios": ["info-hit"],
        "concurrency": [1],
        "duration_s": 1.0,
        "admin_token": "token",
    }
    specs = plan(url, **{**arguments, **options})
    return [(spec.scenario.name, spec.concurrency, spec.processes) for spec in specs]


def test_old_names_are_aliases_and_duplicates_run_once() -> None:
    assert names(scenarios=["info", "search", "info-hit", "list"]) == [
        ("info-hit", 1, 1),
        ("search-hit", 1, 1),
        ("list", 1, 1),
    ]


def test_bare_runs_first_and_failover_last() -> None:
    order = names(scenarios=["failover", "purchase", "bare", "info-miss"], concurrency=[1, 2])
    assert [name for name, _, _ in order] == [
        "bare",
        "bare",
        "purchase",
        "purchase",
        "info-miss",
        "info-miss",
        "failover",
        "failover",
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scenarios": ["nope"]}, "unknown scenario nope"),
        ({"scenarios": []}, "at least one scenario"),
        ({"concurrency": []}, "at least one scenario and one concurrency"),
        ({"concurrency": [0]}, "at least 1"),
        ({"duration_s": 0.0}, "more than 0"),
        ({"warmup_s": -1.0}, "warm-up"),
        ({"processes": 0}, "--processes"),
        ({"scenarios": ["purchase"], "admin_token": None}, "admin token"),
        ({"scenarios": ["invalidation"], "admin_token": None}, "admin token"),
        ({"scenarios": ["failover"], "failover": FailoverOptions("frontend")}, "no tier"),
        ({"scenarios": ["failover"], "failover": FailoverOptions("order", 1.0)}, "--kill-after"),
    ],
)
def test_unusable_plans_are_usage_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(BenchError, match=message) as caught:
        names(**options)
    assert caught.value.status == 2


def test_failover_is_refused_for_a_front_end_on_another_host() -> None:
    with pytest.raises(BenchError, match="on this host"):
        names("http://10.1.2.3:8002", scenarios=["failover"])


def test_a_bad_url_is_a_usage_error() -> None:
    with pytest.raises(BenchError, match="not an http"):
        names("ftp://127.0.0.1")


def test_reads_need_no_token() -> None:
    assert names(scenarios=["info-miss", "search-miss", "bare"], admin_token=None)


def test_the_kill_defaults_to_a_quarter_into_the_window() -> None:
    (spec,) = plan(
        URL, scenarios=["failover"], concurrency=[4], duration_s=8.0, admin_token="token"
    )
    assert spec.kill_after_s == 2.0
    assert spec.failover == FailoverOptions("catalog", None)


@pytest.mark.parametrize(
    ("concurrency", "cpus", "expected"),
    [(1, 2, 1), (8, 16, 1), (9, 2, 2), (32, 2, 2), (32, 1, 1), (32, 64, 4), (9, 64, 4)],
)
def test_default_processes(concurrency: int, cpus: int, expected: int) -> None:
    assert scenarios.default_processes(concurrency, cpus) == expected


def test_processes_given_are_capped_by_the_clients() -> None:
    assert names(concurrency=[1, 3, 16], processes=3) == [
        ("info-hit", 1, 1),
        ("info-hit", 3, 3),
        ("info-hit", 16, 3),
    ]


@pytest.mark.parametrize(("concurrency", "processes"), [(1, 1), (7, 3), (32, 4), (5, 5)])
def test_split_spreads_the_clients_evenly(concurrency: int, processes: int) -> None:
    shares = split(concurrency, processes)
    assert len(shares) == processes
    assert sum(workers for _, workers in shares) == concurrency
    assert max(w for _, w in shares) - min(w for _, w in shares) <= 1
    assert [first for first, _ in shares] == [
        sum(w for _, w in shares[:i]) for i in range(processes)
    ]


def test_the_mix_is_ninety_percent_reads_over_several_books() -> None:
    mix = scenarios.mixed_requests()
    kinds = Counter("purchase" if r.purchase else r.path.split("/")[1] for r in mix)
    assert kinds == {"purchase": 10, "info": 60, "search": 30}
    assert {r.path for r in mix if r.path.startswith("/info/")} == {
        f"/info/{book}" for book in scenarios.MIX_BOOK_IDS
    }
    assert all(r.method == "POST" and r.path == "/purchase/1" for r in mix if r.purchase)
    assert not any(dict(r.headers).get("Cache-Control") for r in mix)


def test_miss_scenarios_ask_for_no_cache() -> None:
    for name in ("info-miss", "search-miss"):
        (request,) = scenarios.scenario_named(name).requests
        assert dict(request.headers) == {"Cache-Control": "no-cache"}
    (hit,) = scenarios.scenario_named("info").requests
    assert hit.headers == ()
