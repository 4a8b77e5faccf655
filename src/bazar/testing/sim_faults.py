"""The simulator's nemesis: crashes, pauses, partitions, and the same for the front end,
drawn from the run's own `Random` at a drawn rate per kind (swarm testing: a seed turns
some kinds off entirely, so rare interleavings are not drowned by common faults).

Why `primary_cut` is its own kind: the dangerous moment for leases is a primary that the
front end cannot hear but that still runs and still reaches its backups; a random partition
rarely picks exactly that link, so it is drawn on purpose (FE <-> the current primary).

Every fault heals by itself (restart, resume, heal) after a drawn time, and `heal_all`
ends them all at once for the liveness phase.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence

from bazar.replication.ready import FRONTEND
from bazar.testing.sim_frontend import FrontendNode
from bazar.testing.sim_network import Loop, Network
from bazar.testing.sim_replica import TIER, ReplicaNode

FAULT_KINDS = (
    "crash",
    "pause",
    "partition",
    "primary_cut",
    "frontend_crash",
    "frontend_pause",
    "clog",
)
Pair = tuple[str, str]


class Nemesis:
    def __init__(
        self,
        *,
        loop: Loop,
        network: Network,
        rng: random.Random,
        replicas: dict[str, ReplicaNode],
        frontend: FrontendNode,
        trace: Callable[[str], None],
        weights: Sequence[float],
        interval_ms: int,
        faults_end_ms: int,
        lease_ms: int,
    ) -> None:
        assert len(weights) == len(FAULT_KINDS)
        self.loop = loop
        self.network = network
        self.rng = rng
        self.replicas = replicas
        self.frontend = frontend
        self.trace = trace
        self.weights = list(weights)
        # Whether a crash is an OS crash is drawn from a stream of its own, so the schedule
        # of every seed (and of the regression seeds kept in tests) stays what it was.
        self.power_rng = random.Random(repr(rng.getstate()))
        self.interval_ms = interval_ms
        self.faults_end_ms = faults_end_ms
        self.lease_ms = lease_ms
        self.cuts: dict[int, list[Pair]] = {}
        self.pauses: Counter[str] = Counter()
        self.faults = 0

    def start(self, at_ms: int) -> None:
        self.loop.at(at_ms, None, None, self._strike)

    def _strike(self) -> None:
        if self.loop.now_ms >= self.faults_end_ms:
            return
        if sum(self.weights) > 0:
            kind = self.rng.choices(FAULT_KINDS, self.weights)[0]
            self.faults += 1
            {
                "crash": self._crash,
                "pause": self._pause,
                "partition": self._partition,
                "primary_cut": self._primary_cut,
                "frontend_crash": self._frontend_crash,
                "frontend_pause": self._frontend_pause,
                "clog": self._clog,
            }[kind]()
        self.loop.after(self.rng.randint(1, 2 * self.interval_ms), None, None, self._strike)

    def _duration(self, low_ms: int, high_ms: int) -> int:
        return self.rng.randint(low_ms, max(low_ms, high_ms))

    # ---------------------------------------------------------------- processes

    def _crash(self) -> None:
        up = [n for _, n in sorted(self.replicas.items()) if n.host.up and not n.retired]
        if not up:
            return
        node = self.rng.choice(up)
        power_loss = self.power_rng.random() < 0.5
        node.crash(power_loss=power_loss)
        self.trace(f"fault=crash node={node.name}" + (" os=1" if power_loss else ""))
        self.loop.after(
            self._duration(20, 3 * self.lease_ms), None, None, lambda: self._restart(node)
        )

    def _restart(self, node: ReplicaNode) -> None:
        if not node.host.up and not node.retired:
            node.restart()
            self.trace(f"fault=restart node={node.name}")

    def _pause(self) -> None:
        running = [n for _, n in sorted(self.replicas.items()) if n.host.up and not n.host.paused]
        if not running:
            return
        node = self.rng.choice(running)
        self._pause_host(node.name)

    def _pause_host(self, name: str) -> None:
        host = self.loop.hosts[name]
        host.paused = True
        self.pauses[name] += 1
        token = self.pauses[name]
        self.trace(f"fault=pause node={name}")
        duration = self._duration(20, 2 * self.lease_ms)
        self.loop.after(duration, None, None, lambda: self._resume(name, token))

    def _resume(self, name: str, token: int | None = None) -> None:
        host = self.loop.hosts[name]
        if host.up and host.paused and token in (None, self.pauses[name]):
            host.paused = False
            self.loop.release(host)
            self.trace(f"fault=resume node={name}")

    def _frontend_crash(self) -> None:
        if self.frontend.host.up:
            self.frontend.crash()
            self.trace("fault=crash node=frontend")
            duration = self._duration(20, 2 * self.lease_ms)
            self.loop.after(duration, None, None, self._frontend_restart)

    def _frontend_restart(self) -> None:
        if not self.frontend.host.up:
            self.frontend.restart()
            self.trace("fault=restart node=frontend")

    def _frontend_pause(self) -> None:
        if self.frontend.host.up and not self.frontend.host.paused:
            self._pause_host(FRONTEND)

    # ---------------------------------------------------------------- links

    def _partition(self) -> None:
        names = [*sorted(self.replicas), FRONTEND]
        shape = self.rng.choice(("isolate", "one_way", "split", "frontend"))
        if shape == "isolate":
            node = self.rng.choice(names)
            pairs = [(a, b) for a in names for b in names if a != b and node in (a, b)]
        elif shape == "one_way":
            src, dst = self.rng.sample(names, 2)
            pairs = [(src, dst)]
        elif shape == "split":
            side = set(self.rng.sample(names, self.rng.randint(1, len(names) - 1)))
            pairs = [(a, b) for a in names for b in names if (a in side) != (b in side)]
        else:
            replica = self.rng.choice(sorted(self.replicas))
            pairs = [(FRONTEND, replica), (replica, FRONTEND)]
        self._cut(shape, pairs, self._duration(50, 4 * self.lease_ms))

    def _primary_cut(self) -> None:
        """The front end loses the current primary, which still reaches everyone else."""
        view = self.frontend.view() or self.frontend.stored[TIER]
        primary = view.primary
        pairs = [(FRONTEND, primary), (primary, FRONTEND)]
        if self.rng.random() < 0.25:
            pairs = [self.rng.choice(pairs)]
        self._cut("primary_cut", pairs, self._duration(self.lease_ms // 2, 4 * self.lease_ms))

    def _clog(self) -> None:
        """A node's links, or one link, hold their messages for a while, then deliver them
        (in a new order): late requests from callers that gave up, or died."""
        names = [*sorted(self.replicas), FRONTEND]
        if self.rng.random() < 0.5:
            node = self.rng.choice(names)
            pairs = [(a, b) for a in names for b in names if a != b and node in (a, b)]
        else:
            src, dst = self.rng.sample(names, 2)
            pairs = [(src, dst)]
        until_ms = self.loop.now_ms + self._duration(50, 3 * self.lease_ms)
        for pair in pairs:
            self.network.clogs[pair] = max(self.network.clogs.get(pair, 0), until_ms)
        shown = ",".join(f"{a}>{b}" for a, b in pairs)
        self.trace(f"fault=clog until={until_ms} links={shown}")

    def _cut(self, shape: str, pairs: list[Pair], duration_ms: int) -> None:
        if not pairs:
            return
        ident = self.faults
        self.cuts[ident] = pairs
        self.network.cuts.update(pairs)
        shown = ",".join(f"{a}>{b}" for a, b in pairs)
        self.trace(f"fault=partition shape={shape} id={ident} cut={shown}")
        self.loop.after(duration_ms, None, None, lambda: self._heal(ident))

    def _heal(self, ident: int) -> None:
        pairs = self.cuts.pop(ident, None)
        if pairs is not None:
            self.network.cuts.subtract(pairs)
            self.trace(f"fault=heal id={ident}")

    # ---------------------------------------------------------------- liveness

    def heal_all(self) -> None:
        """End every fault: heal links, resume and restart every process."""
        for ident in sorted(self.cuts):
            self._heal(ident)
        self.network.clogs.clear()
        for name in [*sorted(self.replicas), FRONTEND]:
            self._resume(name)
        for _, node in sorted(self.replicas.items()):
            self._restart(node)
        self._frontend_restart()
