"""Structured logs of a real cluster started with `bazar up --log-format json`
(docs/contract.md §4): one JSON line per request in the front end's file, found by its
`X-Request-Id`, with the replica used and the cache's hit or miss; JSON lines with `process` in
every replica's file; a view change as one structured line. The human text format is checked in
`tests/unit/test_log_files.py`.

A line is written once its answer has gone out, so a test waits for it (with a deadline), then
for the line of a later request: by then a second line for the first id would be there too.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bazar.testing.cluster import Cluster, wait_until

LINE_DEADLINE_S = 10.0
VIEW_DEADLINE_S = 15.0
COMMON_KEYS = ("ts", "level", "event", "process", "logger")
REQUEST_KEYS = ("request_id", "method", "path", "status", "duration_ms")


@pytest.fixture(scope="module")
def json_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """2 catalog replicas (one is killed by the last test) and 1 order replica."""
    running = Cluster(
        tmp_path_factory.mktemp("json-logs"), order_replicas=1, log_format="json"
    ).start()
    try:
        yield running
    finally:
        running.stop()


def log_lines(cluster: Cluster, process: str) -> list[dict[str, Any]]:
    """Every whole line of the process's current log file (one being written is left for
    the next read), each parsed as one JSON object."""
    text = (cluster.data_dir / "logs" / f"{process}.log").read_text()
    text = text[: text.rfind("\n") + 1]
    lines = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(line, dict) for line in lines)
    return lines


def lines_of(cluster: Cluster, process: str, request_id: str) -> list[dict[str, Any]]:
    return [line for line in log_lines(cluster, process) if line.get("request_id") == request_id]


def request(cluster: Cluster, method: str, path: str) -> str:
    """Make a request with a request id of our own; return that id once the front end has
    logged the request and then a later one."""
    request_id = uuid.uuid4().hex
    status, headers, _ = cluster.request(method, path, headers={"X-Request-Id": request_id})
    assert status != 0, f"no answer to {method} {path}"
    assert headers["x-request-id"] == request_id
    after = uuid.uuid4().hex
    status, _, _ = cluster.request("GET", "/health", headers={"X-Request-Id": after})
    assert status == 200
    wait_until(
        lambda: bool(lines_of(cluster, "frontend", after)),
        LINE_DEADLINE_S,
        f"the front end's log line for request {after}",
    )
    return request_id


def one_line(cluster: Cluster, request_id: str) -> dict[str, Any]:
    lines = lines_of(cluster, "frontend", request_id)
    assert len(lines) == 1, lines
    line = lines[0]
    for key in (*COMMON_KEYS, *REQUEST_KEYS):
        assert key in line, (key, line)
    assert line["event"] == "request"
    assert line["process"] == "frontend"
    assert line["level"] == "info"
    assert isinstance(line["duration_ms"], float | int)
    assert line["duration_ms"] >= 0
    return line


def test_a_cache_miss_then_a_hit_each_log_one_json_line(json_cluster: Cluster) -> None:
    miss = one_line(json_cluster, request(json_cluster, "GET", "/info/3"))
    assert (miss["method"], miss["path"], miss["status"]) == ("GET", "/info/3", 200)
    assert miss["cache"] == "miss"
    assert miss["replica"] in json_cluster.replica_urls("catalog")
    hit = one_line(json_cluster, request(json_cluster, "GET", "/info/3"))
    assert (hit["path"], hit["status"], hit["cache"]) == ("/info/3", 200, "hit")
    assert "replica" not in hit  # answered from the cache: no replica was asked


def test_a_purchase_logs_the_order_primary_it_used(json_cluster: Cluster) -> None:
    line = one_line(json_cluster, request(json_cluster, "POST", "/purchase/5"))
    assert (line["method"], line["path"], line["status"]) == ("POST", "/purchase/5", 200)
    assert line["replica"] == json_cluster.cluster_info()["order"]["primary"]
    assert "cache" not in line


def test_an_error_answer_is_logged_with_its_status(json_cluster: Cluster) -> None:
    line = one_line(json_cluster, request(json_cluster, "GET", "/info/0"))
    assert line["status"] == 422
    line = one_line(json_cluster, request(json_cluster, "GET", "/no/such/route"))
    assert line["status"] == 404


def test_every_line_of_every_process_is_json_with_its_process(json_cluster: Cluster) -> None:
    request(json_cluster, "GET", "/search/distributed")
    for name in ("frontend", "catalog-1", "catalog-2", "order-1"):
        lines = log_lines(json_cluster, name)
        assert lines, name
        for line in lines:
            for key in COMMON_KEYS:
                assert key in line, (name, key, line)
            assert line["process"] == name
        starts = [line for line in lines if line.get("transition") == "start"]
        if name != "frontend":
            assert starts, (name, lines[:3])
            assert starts[0]["event"] == "transition"
            assert starts[0]["node"] == name


def test_log_files_live_under_the_data_dir(json_cluster: Cluster) -> None:
    names = {path.name for path in Path(json_cluster.data_dir, "logs").iterdir()}
    assert {"frontend.log", "catalog-1.log", "catalog-2.log", "order-1.log"} <= names


def test_the_order_service_still_logs_bought_book(json_cluster: Cluster) -> None:
    request(json_cluster, "POST", "/purchase/7")
    events = [line["event"] for line in log_lines(json_cluster, "order-1")]
    assert "bought book Spring in the Pioneer Valley" in events


def view_lines(cluster: Cluster, process: str, tier: str) -> list[dict[str, Any]]:
    return [
        line
        for line in log_lines(cluster, process)
        if line["event"] == "transition" and line.get("transition") == "view"
        if line.get("tier") == tier
    ]


def test_a_view_change_is_one_structured_line(json_cluster: Cluster) -> None:
    """Last in this module: it kills the catalog backup (this cluster does not restart it)."""
    info = json_cluster.cluster_info()["catalog"]
    backup = next(r for r in info["replicas"] if r["role"] == "backup")
    before = view_lines(json_cluster, "frontend", "catalog")
    os.kill(backup["pid"], signal.SIGKILL)

    def dropped() -> list[dict[str, Any]]:
        found = view_lines(json_cluster, "frontend", "catalog")[len(before) :]
        return [line for line in found if line["epoch"] > info["epoch"]]

    wait_until(lambda: bool(dropped()), VIEW_DEADLINE_S, f"a catalog view without {backup}")
    line = dropped()[0]
    assert line["level"] == "info"
    assert line["process"] == "frontend"
    assert line["epoch"] == info["epoch"] + 1
    assert line["primary"] == info["primary"]
    assert line["backups"] == "-"
    wait_until(
        lambda: any(
            line["epoch"] == info["epoch"] + 1 and line["role"] == "primary"
            for line in view_lines(json_cluster, info["primary"], "catalog")
        ),
        VIEW_DEADLINE_S,
        "the primary's line for the new view",
    )
