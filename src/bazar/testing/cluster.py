"""Real clusters on 127.0.0.1 for integration tests and benchmarks: the only launcher.

`bazar up` runs in a new session (its own process group), on a free port, with its data in a
temporary directory; waiting is `wait_until(predicate, deadline)`, never a bare sleep; stopping
is by process group (SIGTERM, then SIGKILL). Logs are kept in the data dir for failure reports.
`bazar serve` of one process (`serve`, `served_by_hand`), and a cluster file's processes each
started so (`ServedCluster`, on hosts of their own with `bazar.testing.netns`), go the same way.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from bazar import config
from bazar.config import load_cluster, load_secrets

START_DEADLINE_S = 30.0
STOP_DEADLINE_S = 10.0


def free_port(span: int = 12) -> int:
    """A port with `span - 1` free ports after it (for the replicas), below the kernel's
    ephemeral range, so that no outgoing connection takes one before a replica binds it."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        if all(_bindable(candidate) for candidate in range(port, port + span)):
            return port
    raise RuntimeError("no free port range")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(predicate: Callable[[], bool], deadline_s: float, what: str) -> None:
    """Poll `predicate` until it holds; fail with `what` after `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"not within {deadline_s} s: {what}")


class Cluster:
    """One `bazar up` process tree."""

    def __init__(
        self,
        data_dir: Path,
        *,
        catalog_replicas: int = 2,
        order_replicas: int = 2,
        restart: bool = False,
        catalog_file: Path | None = None,
        no_cache: bool = False,
        cache_entries: int | None = None,
        cache_ttl_ms: int | None = None,
        test_hooks: bool = False,
        read_timeout_ms: int | None = None,
        log_entries_max: int | None = None,
        min_in_sync: int | None = None,
        log_format: str = "text",
        demo: bool = False,
        replicas_max: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.log_format = log_format
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.arguments = [
            "--data-dir",
            str(data_dir),
            "--port",
            str(self.port),
            "--catalog-replicas",
            str(catalog_replicas),
            "--order-replicas",
            str(order_replicas),
        ]
        if not restart:
            self.arguments.append("--no-restart")
        if catalog_file is not None:
            self.arguments += ["--catalog", str(catalog_file)]
        if no_cache:
            self.arguments.append("--no-cache")
        if cache_entries is not None:
            self.arguments += ["--cache-entries", str(cache_entries)]
        if cache_ttl_ms is not None:
            self.arguments += ["--cache-ttl-ms", str(cache_ttl_ms)]
        if test_hooks:
            self.arguments.append("--test-hooks")
        if read_timeout_ms is not None:
            self.arguments += ["--read-timeout-ms", str(read_timeout_ms)]
        if log_entries_max is not None:
            self.arguments += ["--log-entries-max", str(log_entries_max)]
        if min_in_sync is not None:
            self.arguments += ["--min-in-sync", str(min_in_sync)]
        if replicas_max is not None:
            self.arguments += ["--replicas-max", str(replicas_max)]
        if log_format != "text":  # (the default: so older revisions run too, bench/revisions.py)
            self.arguments += ["--log-format", log_format]
        if demo:
            self.arguments.append("--demo")
        self.process: subprocess.Popen[bytes] | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> Cluster:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.spawn()
            wait_until(self.healthy, START_DEADLINE_S, f"cluster at {self.url} healthy")
        except BaseException:
            self.stop()
            raise
        return self

    def spawn(self) -> None:
        with (self.data_dir / "up.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bazar", *self.command()],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=_environment(),
            )

    def command(self) -> list[str]:
        return ["up", *self.arguments]

    def check_running(self) -> None:
        """Raises: RuntimeError (with the logs) once `bazar up` has exited."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"bazar up exited early:\n{self.logs()}")

    def healthy(self) -> bool:
        self.check_running()
        status, _, _ = self.request("GET", "/health")
        if status != 200:
            return False
        # /health needs only a serving primary per tier; a fresh cluster is ready for tests
        # once every replica is in sync too (a backup's first lease may come a moment later).
        info = self.cluster_info()
        return all(
            r["state"] == "in_sync" for tier in ("catalog", "order") for r in info[tier]["replicas"]
        )

    def stop(self) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left."""
        process = self.process
        if process is None:
            return
        stop_process(process)
        self.process = None

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def logs(self) -> str:
        parts = []
        for path in sorted(self.data_dir.glob("*.log")) + sorted(self.data_dir.glob("logs/*.log")):
            parts.append(f"===== {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    # ---------------------------------------------------------------- secrets and requests

    @property
    def secret(self) -> str:
        return (self.data_dir / "cluster.secret").read_text().strip()

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        base: str | None = None,
        timeout_s: float = 10.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request (status, headers with lower-case names, body); never raises: an
        HTTP error is its status, no answer at all (refused, reset, timeout) is status 0."""
        request = urllib.request.Request(
            (base or self.url) + path, data=body, method=method, headers=headers or {}
        )
        try:
            with _opener().open(request, timeout=timeout_s) as response:
                return response.status, _lower(response.headers.items()), response.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, _lower(error.headers.items()), error.read()
        except (OSError, http.client.HTTPException):  # URLError, resets: nothing answered
            return 0, {}, b""

    def json(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, _, body = self.request(method, path, **kwargs)
        return status, json.loads(body) if body else None

    def internal(self, method: str, base: str, path: str) -> tuple[int, Any]:
        """A call to a replica's internal route with the cluster secret."""
        return self.json(
            method, path, base=base, headers={"Authorization": f"Bearer {self.secret}"}
        )

    def cluster_info(self) -> dict[str, Any]:
        status, body = self.json("GET", "/cluster")
        assert status == 200, body
        info: dict[str, Any] = body["data"]
        return info

    def digests(self, tier: str) -> dict[str, Any]:
        """Every replica's digest (tables and log position), by name."""
        found = {}
        for name, url in self.replica_urls(tier).items():
            status, body = self.internal("GET", url, "/internal/digest")
            assert status == 200, body
            found[name] = body
        return found

    def replica_urls(self, tier: str) -> dict[str, str]:
        return {r["name"]: r["url"] for r in self.cluster_info()[tier]["replicas"]}

    def restock(self, book_id: int, delta: int) -> dict[str, Any]:
        status, body = self.json(
            "PATCH",
            f"/books/{book_id}",
            body=json.dumps({"stock_delta": delta}).encode(),
            headers={
                "Authorization": f"Bearer {self.admin_token}",
                "Content-Type": "application/json",
            },
        )
        assert status == 200, body
        book: dict[str, Any] = body["data"]
        return book


class Serve(Cluster):
    """One `bazar serve` process of `cluster` alone (its peers are not started), from a cluster
    file written here: cheaper than a whole cluster when one process proves the point, and the
    way to run a process with other limits."""

    def __init__(self, cluster: config.Cluster, name: str) -> None:
        super().__init__(Path(cluster.data_dir))
        self.cluster = cluster
        self.node = cluster.node(name)
        self.port = self.node.port
        self.url = self.node.url
        self.cluster_file = self.data_dir / config.CLUSTER_FILE

    def start(self) -> Cluster:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config.write_cluster(self.cluster, self.cluster_file)
        return super().start()

    def command(self) -> list[str]:
        tier = self.node.tier
        return ["serve", tier, "--config", str(self.cluster_file), "--name", self.node.name]

    def healthy(self) -> bool:
        """It answers HTTP (its /health may well say 503: its peers are not running)."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"bazar serve exited early:\n{self.logs()}")
        return self.request("GET", "/health")[0] != 0


def _environment() -> dict[str, str]:
    """Ours, without BAZAR_* variables: a cluster under test takes its secrets from its data
    dir, never from the shell that runs the tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith("BAZAR_")}


def _lower(items: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in items}


def _opener() -> urllib.request.OpenerDirector:
    """No proxies (tests talk to loopback only), no redirects followed silently."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@contextlib.contextmanager
def running(data_dir: Path, **options: Any) -> Iterator[Cluster]:
    cluster = Cluster(data_dir, **options)
    with cluster:
        yield cluster


@contextlib.contextmanager
def served_by_hand(
    cluster: Cluster, name: str, config: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Replica `name` started again as `bazar up`'s supervisor would (`bazar serve` with the
    cluster file, logging to its log): how an operator restarts one process by hand. Stopped
    by its pid at the end (SIGTERM, then SIGKILL)."""
    config = config or cluster.data_dir / "cluster.toml"
    log = cluster.data_dir / "logs" / f"{name}.log"
    process = serve(config, name, log, log_format=cluster.log_format)
    try:
        yield process
    finally:
        stop_process(process)


def serve(
    config: Path,
    name: str,
    log: Path,
    *,
    prefix: Sequence[str] = (),
    host: str | None = None,
    log_format: str = "text",
) -> subprocess.Popen[bytes]:
    """`bazar serve` for process `name` of the cluster file `config`, in a session of its own
    (stopped by `stop_process`), appending its output to `log`. `prefix` runs it through
    another command (`ip netns exec NS` puts it on a host of its own); `host` is `--host`."""
    tier = load_cluster(config).node(name).tier
    command = [*prefix, sys.executable, "-m", "bazar", "serve", tier]
    command += ["--config", str(config), "--name", name]
    command += ["--log-format", log_format] if log_format != "text" else []
    command += ["--host", host] if host is not None else []
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        return subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=_environment(),
        )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group `serve` started, then SIGKILL if it is still there."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_DEADLINE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class ServedCluster(Cluster):
    """The processes of a cluster file started one by one with `bazar serve`, as on several
    hosts (docs/contract.md §4), instead of under `bazar up`: each through its own command
    prefix (see `serve`), logging to `<data-dir>/logs/<name>.log`. The secrets are generated
    into the data dir first, so that every process reads the same ones. Requests and checks are
    `Cluster`'s."""

    def __init__(
        self,
        config: Path,
        *,
        prefixes: Mapping[str, Sequence[str]] | None = None,
        hosts: Mapping[str, str] | None = None,
    ) -> None:
        plan = load_cluster(config)
        self.config = config
        self.data_dir = Path(plan.data_dir)
        self.port = plan.frontend.port
        self.url = plan.frontend.url
        self.names = [node.name for node in plan.nodes()]
        self.prefixes = dict(prefixes or {})
        self.hosts = dict(hosts or {})
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.process = None

    def spawn(self) -> None:
        load_secrets(self.data_dir, {})
        for name in self.names:
            log = self.data_dir / "logs" / f"{name}.log"
            prefix = self.prefixes.get(name, ())
            self.processes[name] = serve(
                self.config, name, log, prefix=prefix, host=self.hosts.get(name)
            )

    def check_running(self) -> None:
        """Raises: RuntimeError (with the logs) once any of its processes has exited."""
        exited = [name for name, process in self.processes.items() if process.poll() is not None]
        if exited:
            raise RuntimeError(f"{', '.join(exited)} exited early:\n{self.logs()}")

    def stop(self) -> None:
        while self.processes:
            stop_process(self.processes.popitem()[1])
