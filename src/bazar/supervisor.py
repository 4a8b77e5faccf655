"""`bazar up`: start every process of a cluster as a child, restart crashed ones with
backoff (unless told not to), and stop them all on SIGTERM or Ctrl-C.

Children stay in the supervisor's process group, so whoever stops `bazar up` by its group
also stops them. Each child logs to `<data-dir>/logs/<name>.log` (bazar.logs rotates it), and
its stdout and stderr go to that file too, for what is written outside logging (a crash before
logging starts): the terminal shows only the supervisor's own lines.

With `--demo`, the supervisor also answers the teaching console (`control.py`): it kills,
pauses, resumes or restarts a replica by name. A replica killed that way stays down until
the console restarts it (automatic restarts are for crashes; a class wants to watch the
failover and the rejoin as two steps).
"""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import msgspec

from bazar.config import Cluster, LogFormat, Node, load_cluster
from bazar.control import ANSWER_TIMEOUT_S, REQUEST_TIMEOUT_MS, ControlServer, refusal
from bazar.logs import LOGS_DIRECTORY, log_path
from bazar.wire import ControlReply, ControlRequest, ProcessState

POLL_S = 0.1
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 5.0
STABLE_S = 10.0
STOP_GRACE_S = 5.0
START_DEADLINE_S = 30.0
KILLED_REAP_S = 1.0
# A console restart stops the replica gracefully first: the front end must wait that long.
assert STOP_GRACE_S + KILLED_REAP_S + ANSWER_TIMEOUT_S < REQUEST_TIMEOUT_MS / 1000


@dataclass(slots=True)
class Child:
    node: Node
    command: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff_s: float = BACKOFF_FIRST_S
    restart_at: float | None = None
    restarts: int = 0
    paused: bool = False  # SIGSTOPped by the console
    held: bool = False  # killed by the console: no automatic restart

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.started_at = time.monotonic()
        self.restart_at = None
        self.paused = False
        self.held = False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: signal.Signals) -> None:
        """Popen.send_signal: a no-op once the process has been reaped (no pid reuse)."""
        assert self.process is not None
        self.process.send_signal(signum)

    def terminate(self) -> None:
        """SIGTERM, and SIGCONT for a paused child so that it can act on it."""
        self.signal(signal.SIGTERM)
        if self.paused:
            self.signal(signal.SIGCONT)
            self.paused = False

    def state(self) -> ProcessState:
        assert self.node.tier != "frontend"
        alive = self.alive()
        return ProcessState(
            name=self.node.name,
            tier=self.node.tier,
            pid=self.process.pid if alive and self.process else None,
            process="stopped" if not alive else "paused" if self.paused else "running",
        )


def _listening(node: Node) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((node.host, node.port)) == 0


def _serves(node: Node) -> bool:
    """Our front end answers HTTP; a foreign process that holds its port does not count."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
    try:
        with opener.open(node.url + "/openapi.json", timeout=0.5) as response:
            return bool(response.status == 200)
    except (OSError, ValueError, http.client.HTTPException):
        return False


def _stop(child: Child) -> None:
    if child.process is None or not child.alive():
        return
    child.terminate()
    try:
        child.process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        child.process.kill()
        child.process.wait()


class Supervisor:
    """Runs the processes the cluster file lists. The front end rewrites that file when a
    replica is added or removed at runtime (docs/contract.md §2 admin routes): the supervisor then
    starts or stops it."""

    def __init__(
        self,
        cluster: Cluster,
        cluster_file: Path,
        *,
        restart: bool,
        log_format: LogFormat = "text",
        demo: bool = False,
    ) -> None:
        self.cluster = cluster
        self.log_format = log_format
        self.cluster_file = cluster_file
        self.cluster_mtime_ns = cluster_file.stat().st_mtime_ns
        self.restart = restart
        self.stopping = False
        self.logs = Path(cluster.data_dir) / LOGS_DIRECTORY
        self.logs.mkdir(parents=True, exist_ok=True)
        self.control = ControlServer(self.on_control) if demo else None
        replicas = [*cluster.catalog, *cluster.order]
        self.children = [self._child(node) for node in [*replicas, cluster.frontend]]

    def _child(self, node: Node) -> Child:
        command = [sys.executable, "-m", "bazar", "serve", node.tier]
        command += ["--config", str(self.cluster_file), "--name", node.name]
        command += ["--log-format", self.log_format]
        if node.tier == "frontend" and self.control is not None:
            command += ["--control-socket", str(self.control.path)]
        return Child(node=node, command=command, log_path=log_path(self.logs.parent, node.name))

    def follow_cluster_file(self) -> None:
        """Start replicas added to the cluster file, stop the ones removed from it."""
        try:
            mtime_ns = self.cluster_file.stat().st_mtime_ns
            if mtime_ns == self.cluster_mtime_ns:
                return
            cluster = load_cluster(self.cluster_file)
        except (OSError, ValueError, msgspec.ValidationError, tomllib.TOMLDecodeError):
            return  # being rewritten; the next poll sees it whole
        self.cluster_mtime_ns = mtime_ns
        listed = {node.name: node for node in [*cluster.catalog, *cluster.order] if node.managed}
        running = {child.node.name for child in self.children}
        for child in [c for c in self.children if c.node.tier != "frontend"]:
            if child.node.name not in listed:
                print(f"{child.node.name} removed; stopping it")
                _stop(child)
                self.children.remove(child)
        for name, node in listed.items():
            if name not in running:
                print(f"{name} added; starting it at {node.url}")
                child = self._child(node)
                child.start()
                self.children.insert(-1, child)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def start_all(self) -> bool:
        """Start every child and wait until the live ones listen. A child that dies on the
        way is the supervision loop's business (restarted, or listed as down); only a front
        end that never listens fails the start."""
        for child in self.children:
            child.start()
        frontend = self.children[-1]
        assert frontend.node.tier == "frontend"
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline and not self.stopping:
            if not frontend.alive():
                return False  # e.g. its port is taken: nothing to serve, say so
            live = [child for child in self.children if child.alive()]
            if all(_listening(child.node) for child in live) and _serves(frontend.node):
                return True
            if self.restart:
                self.tick(time.monotonic())
            time.sleep(POLL_S)
        return self.stopping or _serves(frontend.node)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            started = self.start_all()
        except BaseException:
            self.stop_all()
            raise
        if not started:
            self.stop_all()
            return 1
        if not self.stopping:
            self.print_table()
        while not self.stopping:
            self.tick(time.monotonic())
            self.wait(POLL_S)
        self.stop_all()
        return 0

    def wait(self, timeout_s: float) -> None:
        """Sleep between ticks, answering the teaching console meanwhile (with --demo)."""
        if self.control is None:
            time.sleep(timeout_s)
        else:
            self.control.serve(timeout_s)

    def tick(self, now: float) -> None:
        self.follow_cluster_file()
        for child in self.children:
            if child.alive():
                if now - child.started_at > STABLE_S:
                    child.backoff_s = BACKOFF_FIRST_S
                continue
            if not self.restart or child.held:
                continue
            if child.restart_at is None:
                child.restart_at = now + child.backoff_s
                child.backoff_s = min(child.backoff_s * 2, BACKOFF_MAX_S)
                print(f"{child.node.name} exited; restarting in {child.restart_at - now:.1f} s")
            elif now >= child.restart_at:
                child.restarts += 1
                child.start()

    def stop_all(self) -> None:
        if self.control is not None:
            self.control.close()
        for child in self.children:
            if child.alive():
                child.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()

    def print_table(self) -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="Bazar is up")
        for column in ("process", "url", "pid", "log"):
            table.add_column(column)
        for child in self.children:
            pid = str(child.process.pid) if child.process else "-"
            table.add_row(child.node.name, child.node.url, pid, str(child.log_path))
        console = Console()
        console.print(table)
        data_dir = Path(self.cluster.data_dir)
        console.print(
            f"store: {self.cluster.frontend.url}/   docs: {self.cluster.frontend.url}/docs"
        )
        console.print(f"admin token: {data_dir / 'admin.token'} (or $BAZAR_ADMIN_TOKEN)")
        if self.control is not None:
            console.print("teaching console: on (--demo), in the cluster view, with the token")
        console.print("Ctrl-C stops everything.")
        sys.stdout.flush()

    # ---------------------------------------------------------------- teaching console

    def on_control(self, request: ControlRequest) -> ControlReply:
        """Act on a replica for the console (`control.py`); the front end is not offered:
        killing it would take the console down with it."""
        replicas = [child for child in self.children if child.node.tier != "frontend"]
        if request.action is None:
            return ControlReply(processes=[child.state() for child in replicas])
        child = next((c for c in replicas if c.node.name == request.name), None)
        if child is None:
            return refusal("not_found", f"bazar up runs no replica named {request.name!r}")
        if request.action in ("pause", "resume") and not child.alive():
            return refusal("not_running", f"{child.node.name} is not running")
        if request.action == "kill":
            _kill(child)
        elif request.action == "pause":
            child.signal(signal.SIGSTOP)
            child.paused = True
        elif request.action == "resume":
            child.signal(signal.SIGCONT)
            child.paused = False
        else:
            _stop(child)
            child.restarts += 1
            child.backoff_s = BACKOFF_FIRST_S
            child.start()
        print(f"{child.node.name}: {request.action} (teaching console)")
        sys.stdout.flush()
        return ControlReply(processes=[child.state()])


def _kill(child: Child) -> None:
    """SIGKILL, as a crash would, and reap it; it stays down until restarted by hand."""
    child.held = True
    if child.process is None or not child.alive():
        return
    child.signal(signal.SIGKILL)
    child.paused = False
    try:
        child.process.wait(timeout=KILLED_REAP_S)
    except subprocess.TimeoutExpired:
        print(f"{child.node.name} (pid {child.process.pid}) not reaped after SIGKILL")
