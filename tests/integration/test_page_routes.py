"""The web page's routes over HTTP: its scripts and vendored files, and the teaching console's
fault routes (docs/contract.md §4 `--demo`, §8 errors) with the supervisor's control channel
behind them.

Without `--demo` the routes do not exist: 404 even with the admin token, and nothing is
killed. With it: 401 without the token; 404 for an unknown replica or action; 405 for another
method; 409 to pause a stopped replica; each action does to the process what it says (read
from /proc), and a replica killed from the console stays down until restarted from it.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bazar import control
from bazar.config import CLUSTER_FILE, plan_cluster, write_cluster
from bazar.supervisor import Supervisor
from bazar.testing.cluster import Cluster, free_port, wait_until
from bazar.wire import ControlReply, ControlRequest, ProcessState

CONSOLE_PATHS = ("/admin/processes", "/admin/replicas/{name}/{action}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("demo"), demo=True, restart=True) as running:
        yield running


def admin(cluster: Cluster, method: str, path: str, token: str | None = None) -> tuple[int, Any]:
    token = cluster.admin_token if token is None else token
    return cluster.json(method, path, headers={"Authorization": f"Bearer {token}"})


def replica(cluster: Cluster, name: str) -> dict[str, Any]:
    tier = name.split("-")[0]
    found: dict[str, Any] = next(
        r for r in cluster.cluster_info()[tier]["replicas"] if r["name"] == name
    )
    return found


def process_state(pid: int) -> str:
    """The kernel's one-letter state of a process: R, S or D running or waiting, T stopped (a
    signal takes effect a moment after it is sent: poll it)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/static/js/charts.js", "javascript"),
        ("/static/js/console.js", "javascript"),
        ("/static/vendor/uplot/uPlot.iife.min.js", "javascript"),
        ("/static/vendor/uplot/uPlot.min.css", "text/css"),
    ],
)
def test_the_page_s_scripts_and_vendored_files_are_served(
    cluster: Cluster, path: str, media_type: str
) -> None:
    status, headers, body = cluster.request("GET", path)
    assert (status, media_type in headers["content-type"]) == (200, True), headers
    assert body


@pytest.mark.parametrize(
    "path",
    [
        "/static/index.html",  # the pages are served at / and /docs only
        "/static/js",
        "/static/js/",
        "/static/js/nope.js",
        "/static/js/%2e%2e/index.html",
        "/static/vendor/uplot/%2e%2e/%2e%2e/index.html",
    ],
)
def test_anything_else_under_static_is_404_json(cluster: Cluster, path: str) -> None:
    status, body = cluster.json("GET", path)
    assert (status, body["error"]["code"]) == (404, "not_found"), body


def test_fault_routes_do_not_exist_without_demo(cluster: Cluster) -> None:
    pid = replica(cluster, "catalog-2")["pid"]
    for method, path in (
        ("POST", "/admin/replicas/catalog-2/kill"),
        ("POST", "/admin/replicas/catalog-2/pause"),
        ("GET", "/admin/processes"),
    ):
        status, body = admin(cluster, method, path)
        assert (status, body["error"]["code"]) == (404, "not_found"), (path, body)
    assert process_state(pid) in ("R", "S", "D")  # alive, not stopped
    assert replica(cluster, "catalog-2")["state"] == "in_sync"
    status, document = cluster.json("GET", "/openapi.json")
    assert status == 200
    assert not set(CONSOLE_PATHS) & set(document["paths"])


def test_fault_routes_refuse_without_the_admin_token(demo: Cluster) -> None:
    for token in ("", "wrong", demo.secret):
        for method, path in (
            ("GET", "/admin/processes"),
            ("POST", "/admin/replicas/catalog-2/kill"),
            ("POST", "/admin/replicas/nobody/kill"),
        ):
            status, body = admin(demo, method, path, token)
            assert (status, body["error"]["code"]) == (401, "unauthorized"), (path, body)
    assert replica(demo, "catalog-2")["state"] == "in_sync"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("POST", "/admin/replicas/nobody/kill", 404, "not_found"),
        ("POST", "/admin/replicas/frontend/kill", 404, "not_found"),  # not offered
        ("POST", "/admin/replicas/catalog-1/explode", 404, "not_found"),
        ("POST", "/admin/replicas/" + "x" * 300 + "/kill", 404, "not_found"),
        ("POST", "/admin/replicas/catalog-1", 405, "method_not_allowed"),
        ("GET", "/admin/replicas/catalog-1/kill", 405, "method_not_allowed"),
        ("DELETE", "/admin/processes", 405, "method_not_allowed"),
    ],
)
def test_bad_fault_requests_get_a_json_error(
    demo: Cluster, method: str, path: str, status: int, code: str
) -> None:
    got, body = admin(demo, method, path)
    assert (got, body["error"]["code"]) == (status, code), body


def test_processes_lists_every_replica_with_its_pid(demo: Cluster) -> None:
    status, body = admin(demo, "GET", "/admin/processes")
    assert status == 200, body
    listed = {p["name"]: p for p in body["data"]}
    assert set(listed) == {"catalog-1", "catalog-2", "order-1", "order-2"}
    for name, entry in listed.items():
        assert entry["process"] == "running"
        assert entry["pid"] == replica(demo, name)["pid"]
    status, document = demo.json("GET", "/openapi.json")
    assert set(CONSOLE_PATHS) <= set(document["paths"])


def test_kill_holds_a_replica_down_until_restart(demo: Cluster) -> None:
    wait_until(lambda: replica(demo, "order-2")["state"] == "in_sync", 15, "order-2 in sync")
    pid = replica(demo, "order-2")["pid"]
    status, body = admin(demo, "POST", "/admin/replicas/order-2/kill")
    assert (status, body["data"]) == (200, {**body["data"], "process": "stopped", "pid": None})
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped
    wait_until(lambda: replica(demo, "order-2")["state"] == "down", 15, "order-2 down")
    # Automatic restarts are on (0.2 s backoff), yet the killed replica stays down.
    status, body = admin(demo, "GET", "/admin/processes")
    assert {"name": "order-2", "tier": "order", "pid": None, "process": "stopped"} in body["data"]

    status, body = admin(demo, "POST", "/admin/replicas/order-2/pause")
    assert (status, body["error"]["code"]) == (409, "not_running"), body
    status, body = admin(demo, "POST", "/admin/replicas/order-2/kill")  # already: no-op
    assert (status, body["data"]["process"]) == (200, "stopped"), body

    status, body = admin(demo, "POST", "/admin/replicas/order-2/restart")
    assert (status, body["data"]["process"]) == (200, "running"), body
    assert body["data"]["pid"] not in (None, pid)
    wait_until(lambda: replica(demo, "order-2")["state"] == "in_sync", 15, "order-2 back")


def test_pause_stops_the_process_and_resume_continues_it(demo: Cluster) -> None:
    wait_until(lambda: replica(demo, "catalog-2")["state"] == "in_sync", 15, "catalog-2 in sync")
    pid = replica(demo, "catalog-2")["pid"]
    status, body = admin(demo, "POST", "/admin/replicas/catalog-2/pause")
    assert (status, body["data"]) == (
        200,
        {"name": "catalog-2", "tier": "catalog", "pid": pid, "process": "paused"},
    )
    wait_until(lambda: process_state(pid) == "T", 5, "catalog-2 stopped by SIGSTOP")
    wait_until(lambda: replica(demo, "catalog-2")["state"] == "down", 15, "catalog-2 down")
    status, body = admin(demo, "POST", "/admin/replicas/catalog-2/resume")
    assert (status, body["data"]["process"], body["data"]["pid"]) == (200, "running", pid)
    wait_until(lambda: process_state(pid) in ("R", "S", "D"), 5, "catalog-2 continued")
    wait_until(lambda: replica(demo, "catalog-2")["state"] == "in_sync", 15, "catalog-2 back")


def test_restart_of_the_primary_brings_a_new_process_back_in_sync(demo: Cluster) -> None:
    """Whether a backup is promoted meanwhile depends on how fast the new process asks for a
    lease; either way the view changes and the new process is in sync."""
    wait_until(
        lambda: all(r["state"] == "in_sync" for r in demo.cluster_info()["catalog"]["replicas"]),
        15,
        "catalog in sync",
    )
    before = demo.cluster_info()["catalog"]
    old = before["primary"]
    old_pid = replica(demo, old)["pid"]
    status, body = admin(demo, "POST", f"/admin/replicas/{old}/restart")
    assert (status, body["data"]["process"]) == (200, "running"), body
    new_pid = body["data"]["pid"]
    assert new_pid not in (None, old_pid)
    assert not Path(f"/proc/{old_pid}").exists()
    wait_until(
        lambda: replica(demo, old)["pid"] == new_pid and replica(demo, old)["state"] == "in_sync",
        20,
        f"{old} back in sync as pid {new_pid}",
    )
    assert demo.cluster_info()["catalog"]["epoch"] > before["epoch"]


# ---------------------------------------------------------------- the control channel itself


def test_control_channel_answers_garbage_with_a_refusal_and_cleans_up() -> None:
    """The supervisor's end, alone: a bad request line gets an error, never an exception in
    the supervision loop; closing removes the socket's private directory."""
    state = ProcessState(name="catalog-1", tier="catalog", pid=1, process="running")
    server = control.ControlServer(lambda request: ControlReply(processes=[state]))
    assert server.directory.stat().st_mode & 0o777 == 0o700
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            server.serve(0.05)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        for line in (b"not json\n", b'{"action": "explode"}\n', b"x" * 5000 + b"\n"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(5)
                client.connect(str(server.path))
                client.sendall(line)
                reply = json.loads(client.makefile("rb").readline())
            assert reply["error"]["code"] == "invalid_request", reply
        good = ControlRequest(action="kill", name="catalog-1")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect(str(server.path))
            client.sendall(json.dumps({"action": good.action, "name": good.name}).encode() + b"\n")
            reply = json.loads(client.makefile("rb").readline())
        assert reply["processes"][0]["name"] == "catalog-1"
    finally:
        stop.set()
        thread.join()
        server.close()
    assert not server.directory.exists()


def test_only_the_front_end_of_a_demo_supervisor_gets_the_control_socket(tmp_path: Path) -> None:
    """The routes exist where the front end is handed the supervisor's socket, nowhere else
    (the supervisors are built, not run: nothing is started)."""
    cluster = plan_cluster(
        data_dir=tmp_path,
        host="127.0.0.1",
        port=free_port(),
        catalog_replicas=2,
        order_replicas=2,
        catalog_file=None,
    )
    cluster_file = tmp_path / CLUSTER_FILE
    write_cluster(cluster, cluster_file)
    plain = Supervisor(cluster, cluster_file, restart=True)
    demo = Supervisor(cluster, cluster_file, restart=True, demo=True)
    assert plain.control is None
    assert demo.control is not None
    try:
        for child in plain.children:
            assert "--control-socket" not in child.command
        for child in demo.children:
            given = "--control-socket" in child.command
            assert given == (child.node.tier == "frontend"), child.command
            if given:
                assert child.command[-1] == str(demo.control.path)
    finally:
        demo.stop_all()
    assert not demo.control.directory.exists()
