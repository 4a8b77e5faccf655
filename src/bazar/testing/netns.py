"""Hosts of their own on one machine, for tests: a network namespace per process, joined by a
veth pair to one bridge, each at its own address of a private /24 (10.213.X.0/24) that exists
only in the namespaces made here and on the bridge (which holds .1, so the test process in the
root namespace reaches every host directly). Namespaces have no route elsewhere.

Rules: every name carries a tag drawn per network, so runs never collide, and the /24 is one
that no interface or route of the root namespace uses yet. Whatever is made is recorded with
how to undo it, at once, so `close()` removes all of it in reverse order even after a failure
halfway, and reports what it could not remove instead of raising. Root only: `unavailable()`
says why namespaces cannot be made here. Processes are not this module's: stop those running
in a namespace before closing the network.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import subprocess
from dataclasses import dataclass

SUBNET_PREFIX = "10.213"
HOST_ADDRESS_FIRST = 10
HOSTS_MAX = 200
IP_TIMEOUT_S = 10.0
SUBNET_TRIES_MAX = 50


class NetworkError(RuntimeError):
    """An `ip` command failed (its stderr is the message)."""


@dataclass(frozen=True, slots=True)
class Host:
    """A namespace, its address, and the root side of its veth pair (what a cut sets down)."""

    namespace: str
    address: str
    veth: str

    @property
    def prefix(self) -> tuple[str, ...]:
        """The command prefix that runs a command on this host."""
        return ("ip", "netns", "exec", self.namespace)


def _ip(*arguments: str) -> str:
    """Raises: NetworkError."""
    result = subprocess.run(
        ["ip", *arguments], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
    )
    if result.returncode != 0:
        raise NetworkError(f"ip {' '.join(arguments)}: {result.stderr.strip()}")
    return result.stdout


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (run as root to test several hosts)"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"bzprobe{secrets.token_hex(4)}"
    try:
        _ip("netns", "add", probe)
    except (NetworkError, OSError, subprocess.TimeoutExpired) as error:
        return f"`ip netns add` failed: {error}"
    try:
        _ip("netns", "delete", probe)
    except (NetworkError, OSError, subprocess.TimeoutExpired) as error:
        return f"`ip netns delete` failed: {error}"
    return None


def _free_subnet(rng: random.Random) -> str:
    """`10.213.X` for an X that no address or route of the root namespace mentions."""
    used = _ip("-4", "-o", "address", "show") + _ip("-4", "route", "show", "table", "all")
    for _ in range(SUBNET_TRIES_MAX):
        subnet = f"{SUBNET_PREFIX}.{rng.randrange(1, 255)}"
        if f"{subnet}." not in used:
            return subnet
    raise NetworkError(f"no free /24 in {SUBNET_PREFIX}.0.0/16")


class Network:
    """A bridge and the hosts on it; `cut(host)` and `heal(host)` set its link down and up."""

    def __init__(self) -> None:
        self.tag = f"bz{secrets.token_hex(3)}"  # link names stay within 15 characters
        self.bridge = f"{self.tag}br"
        self.subnet = ""
        self.hosts: list[Host] = []
        self._undo: list[tuple[str, ...]] = []

    def open(self) -> Network:
        """Raises: NetworkError (what was made so far is still removed by `close`)."""
        self.subnet = _free_subnet(random.Random())
        self._make(("link", "add", self.bridge, "type", "bridge"), ("link", "del", self.bridge))
        _ip("address", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def add_host(self) -> Host:
        """A new namespace on the bridge, at the next address. Raises: NetworkError."""
        number = len(self.hosts)
        assert self.subnet, "open() the network first"
        assert number < HOSTS_MAX
        host = Host(
            namespace=f"{self.tag}-{number}",
            address=f"{self.subnet}.{HOST_ADDRESS_FIRST + number}",
            veth=f"{self.tag}h{number}",
        )
        inside = f"{self.tag}p{number}"
        self._make(("netns", "add", host.namespace), ("netns", "delete", host.namespace))
        veth = ("link", "add", host.veth, "type", "veth", "peer", "name", inside)
        self._make(veth, ("link", "del", host.veth))
        _ip("link", "set", inside, "netns", host.namespace)
        _ip("link", "set", host.veth, "master", self.bridge)
        _ip("link", "set", host.veth, "up")
        _ip("-n", host.namespace, "address", "add", f"{host.address}/24", "dev", inside)
        _ip("-n", host.namespace, "link", "set", inside, "up")
        _ip("-n", host.namespace, "link", "set", "lo", "up")
        self.hosts.append(host)
        return host

    def cut(self, host: Host) -> None:
        """The host's link down: nothing reaches it, it reaches nothing."""
        _ip("link", "set", host.veth, "down")

    def heal(self, host: Host) -> None:
        _ip("link", "set", host.veth, "up")

    def pids(self, host: Host) -> set[int]:
        """The processes running in the host's namespace."""
        return {int(pid) for pid in _ip("netns", "pids", host.namespace).split()}

    def close(self) -> list[str]:
        """Remove everything made, newest first; returns what could not be removed."""
        left = []
        while self._undo:
            undo = self._undo.pop()
            try:
                _ip(*undo)  # deleting a veth deletes its peer, wherever that is
            except (NetworkError, OSError, subprocess.TimeoutExpired) as error:
                left.append(str(error))
        self.hosts.clear()
        return left

    def _make(self, command: tuple[str, ...], undo: tuple[str, ...]) -> None:
        _ip(*command)
        self._undo.append(undo)

    def __enter__(self) -> Network:
        try:
            return self.open()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        left = self.close()
        if left:
            raise NetworkError(f"network {self.tag} not fully removed: {left}")
