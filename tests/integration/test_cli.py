"""The command line against a real cluster: the lab's client, exit statuses, and `bazar up`
stopping every child and freeing every port on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bazar.testing.cluster import Cluster, wait_until


def bazar(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bazar", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_buy_prints_bought_book_and_the_order_service_logs_it(cluster: Cluster) -> None:
    done = bazar("buy", "7", "-n", "2", "--url", cluster.url)
    assert done.returncode == 0, done.stderr
    assert "bought book Spring in the Pioneer Valley" in done.stdout
    log = (cluster.data_dir / "logs" / "order-1.log").read_text()
    assert "bought book Spring in the Pioneer Valley" in log


@pytest.mark.parametrize(
    ("arguments", "status"),
    [
        (("search", "distributed"), 0),
        (("info", "3"), 0),
        (("info", "99"), 1),
        (("buy", "99"), 1),
        (("buy", "6", "-n", "1000"), 1),
        (("info", "abc"), 2),
        (("buy", "1", "-n", "0"), 2),
        (("status",), 0),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else str(value),
)
def test_client_exit_statuses(cluster: Cluster, arguments: tuple[str, ...], status: int) -> None:
    done = bazar(*arguments, "--url", cluster.url)
    assert done.returncode == status, (done.stdout, done.stderr)


def test_json_prints_the_whole_response_body(cluster: Cluster) -> None:
    done = bazar("info", "2", "--json", "--url", cluster.url)
    assert json.loads(done.stdout)["data"]["title"] == "RPCs for Noobs"


def test_unreachable_front_end_exits_3() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert bazar("info", "1", "--url", f"http://127.0.0.1:{port}").returncode == 3


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_up_stops_every_child_and_frees_every_port_on_sigterm(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "c").start()
    try:
        info = cluster.cluster_info()
        pids = [r["pid"] for tier in ("catalog", "order") for r in info[tier]["replicas"]]
        ports = [cluster.port] + [
            int(r["url"].rsplit(":", 1)[1])
            for t in ("catalog", "order")
            for r in info[t]["replicas"]
        ]
        assert cluster.process is not None
        cluster.process.send_signal(signal.SIGTERM)
        assert cluster.process.wait(timeout=30) == 0
        wait_until(lambda: not any(_alive(pid) for pid in pids), 10, "every child stopped")
        assert not any(_listening(port) for port in ports)
    finally:
        cluster.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_exits_1_when_its_front_end_cannot_listen(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bazar",
                "up",
                "--data-dir",
                str(tmp_path / "d"),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert "Bazar is up" not in done.stdout
