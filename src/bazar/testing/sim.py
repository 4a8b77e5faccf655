"""Deterministic simulation of the whole purchase: the production replica driver and core
(`replication/driver.py`, `replication/replica.py`) for every replica of both tiers, the view
manager (`frontend/views.py`) and the read cache (`frontend/cache.py`), the order tier's
purchases (a sale at the catalog, then the order) and its reconciler, under a seeded world
of lossy, partitioned networks, drifting clocks, slow disks, crashes (OS crashes too),
pauses and clients (docs/testing.md §2).

Why: the failover paths (leases, dropping a silent backup, promotion, catch-up and join)
are interleavings that real-process tests hit by luck; here one seed draws a whole world
and replays it exactly, so a failure is a command line:

    python -m bazar.testing.sim --seed N --trace

A run: `draw_config(seed)` draws the world (swarm testing: the number of replicas of each
tier (no order tier in some worlds: purchases then go to the catalog), clients, loss,
duplicates, delays, clock drift, disk latency, the cache, which faults and how often, the
timing);
separate `Random`s drive the network, the faults and each client. The safety phase runs
the workload under faults until `faults_ms`; the liveness phase heals everything, restarts
every process that is down (every replica, when the seed says so), and must reach within a
deadline a state where every client operation has completed, every replica is in its
tier's view with the same committed data, and every sale has its order. Then the end
checks run (`sim_checks.py`). Any
exception, a core assertion included, fails the run. `--count K` runs K seeds from `--seed`.

Controls (`--control`): deliberate bugs the checks must catch. `promote_catching_up` lets
the view manager promote a member that is not in sync; `skip_lease_wait` lets it drop a
replica whose lease is still running (`half_lease_wait`: after half a lease of silence);
`no_intent` commits a batch without an fsync and without the primary's intent log;
`reply_before_persist` makes the production driver send and answer before it persists a
step; `read_without_check` makes it serve reads without the core's check; `stale_fill` lets
the front end's cache take a fill older than an invalidation.
"""

from __future__ import annotations

import argparse
import random
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from bazar.config import ReplicatedTier
from bazar.frontend.views import Leases, initial_view
from bazar.replication.driver import Controls
from bazar.replication.ready import FRONTEND
from bazar.replication.replica import Timing
from bazar.testing.history import History
from bazar.testing.sim_checks import Checks, Trace, Violation, check_end
from bazar.testing.sim_clients import Client, Phase, Workload
from bazar.testing.sim_faults import FAULT_KINDS, Nemesis
from bazar.testing.sim_frontend import FrontendNode
from bazar.testing.sim_machines import OrderSim
from bazar.testing.sim_membership import Operator
from bazar.testing.sim_network import Host, Loop, Network, Weather
from bazar.testing.sim_order import ORDER_TIER, OrderNode
from bazar.testing.sim_replica import TIER, ReplicaNode, SimLimits
from bazar.testing.sim_store import SimStore, StoreError
from bazar.wire import Member, View

CONTROLS = (
    "promote_catching_up",
    "skip_lease_wait",
    "half_lease_wait",
    "no_intent",
    "reply_before_persist",
    "read_without_check",
    "stale_fill",
)
PROBE_MS = 50
WARMUP_MS = 300


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything a seed decides before the run starts."""

    seed: int
    control: str | None
    replicas: int
    clients: int
    stocks: tuple[tuple[int, int], ...]
    loss: float
    duplicate: float
    delay_min_ms: int
    delay_mean_ms: float
    clocks: tuple[tuple[float, int], ...]  # (rate, offset_ms) per replica, then the front end
    faults_ms: int
    fault_interval_ms: int
    fault_weights: tuple[float, ...]
    lease_ms: int
    tick_ms: int
    jitter_ms_max: int
    catch_up_entries_max: int
    log_entries_max: int
    batch_commands_max: int
    restart_all: bool
    workload: Workload
    persist_ms_max: int
    cache: bool
    orders: int  # order replicas (0: purchases go to the catalog directly)
    order_clocks: tuple[tuple[float, int], ...]
    recovery_ms: int
    membership_ms: int  # how often the operator adds, removes or switches over (0: never)

    @property
    def lease_margin_ms(self) -> int:
        return self.lease_ms // 10

    def timing(self) -> Timing:
        return Timing(
            lease_ms=self.lease_ms,
            lease_renew_ms=self.lease_ms // 10,
            retry_ms=50,
            commit_notice_ms=2,
            catch_up_entries_max=self.catch_up_entries_max,
            log_entries_max=self.log_entries_max,
        )

    def leases(self) -> Leases:
        if self.control == "promote_catching_up":
            return Leases(self.lease_ms, self.lease_margin_ms, unsafe_promote_catching_up=True)
        if self.control == "skip_lease_wait":
            return Leases(self.lease_ms, lease_margin_ms=-self.lease_ms + 1)
        if self.control == "half_lease_wait":
            return Leases(self.lease_ms, lease_margin_ms=-self.lease_ms // 2)
        return Leases(self.lease_ms, self.lease_margin_ms)

    def limits(self) -> SimLimits:
        return SimLimits(
            tick_ms=self.tick_ms,
            lease_timeout_ms=3 * (self.lease_ms // 10),
            batch_commands_max=self.batch_commands_max,
            persist_ms_max=self.persist_ms_max,
        )

    def controls(self) -> Controls:
        """The driver's deliberate bugs (the others live in the view manager and store)."""
        return Controls(
            reply_before_persist=self.control == "reply_before_persist",
            read_without_check=self.control == "read_without_check",
        )

    def summary(self) -> str:
        kinds = ",".join(
            f"{kind}={weight:.2f}"
            for kind, weight in zip(FAULT_KINDS, self.fault_weights, strict=True)
            if weight
        )
        return (
            f"replicas={self.replicas} clients={self.clients} books={len(self.stocks)} "
            f"loss={self.loss:.3f} dup={self.duplicate:.3f} delay={self.delay_min_ms}+"
            f"{self.delay_mean_ms:.0f}ms lease={self.lease_ms} tick={self.tick_ms}"
            f"+{self.jitter_ms_max} "
            f"log={self.log_entries_max} catch_up={self.catch_up_entries_max} "
            f"faults_ms={self.faults_ms} every={self.fault_interval_ms} [{kinds or 'none'}] "
            f"restart_all={self.restart_all} persist<={self.persist_ms_max}ms "
            f"cache={self.cache} orders={self.orders} membership={self.membership_ms}"
        )


def draw_config(seed: int, control: str | None = None) -> SimConfig:
    """The swarm: one root `Random(seed)` draws every option, in a fixed order."""
    assert control is None or control in CONTROLS
    rng = random.Random(seed)
    replicas = rng.choice((1, 2, 2, 3, 3, 3, 5))
    clients = rng.randint(1, 8)
    stocks = tuple((book, rng.randint(2, 12)) for book in range(1, rng.randint(1, 3) + 1))
    loss = rng.uniform(0, 0.2) if rng.random() < 0.7 else 0.0
    duplicate = rng.uniform(0, 0.1) if rng.random() < 0.5 else 0.0
    delay_min_ms = rng.randint(0, 5)
    delay_mean_ms = rng.uniform(1, 40)
    drift = rng.uniform(0, 0.004)
    clocks = tuple(
        (1 + rng.uniform(-drift, drift), rng.randint(0, 100_000)) for _ in range(replicas + 1)
    )
    weights = tuple(rng.random() if rng.random() < 0.7 else 0.0 for _ in FAULT_KINDS)
    workload = Workload(
        books=tuple(book for book, _ in stocks),
        ops_max=rng.randint(10, 40),
        live_ops=rng.randint(1, 3),
        think_ms_max=rng.randint(20, 300),
        attempts_max=rng.randint(2, 6),
        backoff_ms=rng.randint(10, 200),
        read_share=rng.uniform(0.2, 0.5),
        restock_share=rng.uniform(0, 0.2),
    )
    return SimConfig(
        seed=seed,
        control=control,
        replicas=replicas,
        clients=clients,
        stocks=stocks,
        loss=loss,
        duplicate=duplicate,
        delay_min_ms=delay_min_ms,
        delay_mean_ms=delay_mean_ms,
        clocks=clocks,
        faults_ms=rng.randint(3000, 9000),
        fault_interval_ms=rng.randint(100, 700),
        fault_weights=weights,
        lease_ms=rng.choice((500, 1000)),
        tick_ms=rng.choice((10, 20)),
        jitter_ms_max=rng.choice((0, 2, 5)),
        catch_up_entries_max=rng.choice((1, 3, 64)),
        log_entries_max=rng.choice((2, 5, 10_000)),
        batch_commands_max=rng.choice((1, 4, 16)),
        restart_all=rng.random() < 0.3,
        workload=workload,
        persist_ms_max=rng.choice((0, 1, 3, 10)),
        cache=rng.random() < 0.8,
        orders=(orders := rng.choice((0, 0, 1, 2, 2, 3))),
        order_clocks=tuple(
            (1 + rng.uniform(-drift, drift), rng.randint(0, 100_000)) for _ in range(orders)
        ),
        recovery_ms=rng.choice((100, 300)),
        membership_ms=rng.choice((0, 0, 300, 1000)),
    )


@dataclass(frozen=True, slots=True)
class Report:
    config: SimConfig
    ok: bool
    message: str
    steps: int
    sim_ms: int
    trace_hash: str
    tail: tuple[str, ...]
    operations: int
    transitions: tuple[tuple[str, int], ...]

    def replay(self) -> str:
        control = f" --control {self.config.control}" if self.config.control else ""
        seed = self.config.seed
        return f"BAZAR_SEED={seed} python -m bazar.testing.sim --seed {seed} --trace{control}"


class World:
    """One seeded run: the processes, the network, the nemesis and the clients."""

    def __init__(self, config: SimConfig, echo: Callable[[str], None] | None = None) -> None:
        self.config = config
        root = random.Random(config.seed ^ 0x5EED)
        self.loop = Loop(random.Random(root.getrandbits(64)), config.jitter_ms_max)
        self.trace = Trace(self.loop, echo)
        names = [f"r{index}" for index in range(1, config.replicas + 1)]
        for name, (rate, offset) in zip([*names, FRONTEND], config.clocks, strict=True):
            self.loop.hosts[name] = Host(name, rate=rate, offset_ms=offset)
        clients = [f"client{index}" for index in range(config.clients)]
        for name in clients:
            self.loop.hosts[name] = Host(name)
        weather = Weather(config.loss, config.duplicate, config.delay_min_ms, config.delay_mean_ms)
        self.network = Network(self.loop, random.Random(root.getrandbits(64)), weather, clients)
        self.checks = Checks()
        self.history = History(clock=lambda: float(self.loop.now_ms))
        self.initial = dict(config.stocks)
        self.limits = config.limits()
        self.disk = random.Random(config.seed ^ 0xD15C)  # (a stream of its own)
        order_names = [f"o{index}" for index in range(1, config.orders + 1)]
        for name, (rate, offset) in zip(order_names, config.order_clocks, strict=True):
            self.loop.hosts[name] = Host(name, rate=rate, offset_ms=offset)
        self.replicas: dict[str, ReplicaNode] = {name: self._replica(name) for name in names}
        self.replicas.update((name, self._order_replica(name)) for name in order_names)
        self.tiers: dict[ReplicatedTier, list[str]] = {TIER: names}
        if order_names:
            self.tiers[ORDER_TIER] = order_names
        self.checks.replicas = self.replicas
        views: dict[str, View] = {
            tier: initial_view(tier, tuple(Member(name=n, url=f"sim://{n}") for n in members))
            for tier, members in self.tiers.items()
        }
        self.frontend = FrontendNode(
            loop=self.loop,
            network=self.network,
            trace=partial(self.trace.line, FRONTEND),
            on_install=self.checks.view_installed,
            limits=self.limits,
            leases=config.leases(),
            views=views,
            cache=config.cache or config.control == "stale_fill",
            unsafe_fill_stale=config.control == "stale_fill",
        )
        self.phase = Phase(faults_end_ms=WARMUP_MS + config.faults_ms)
        self.nemesis = Nemesis(
            loop=self.loop,
            network=self.network,
            rng=random.Random(root.getrandbits(64)),
            replicas=self.replicas,
            frontend=self.frontend,
            trace=partial(self.trace.line, "nemesis"),
            weights=config.fault_weights,
            interval_ms=config.fault_interval_ms,
            faults_end_ms=self.phase.faults_end_ms,
            lease_ms=config.lease_ms,
        )
        self.clients = [
            self._client(index, root.getrandbits(64)) for index in range(config.clients)
        ]
        self.restart_rng = random.Random(root.getrandbits(64))
        self.converged = False
        self.operator = Operator(
            loop=self.loop,
            rng=random.Random(config.seed ^ 0x0BE7),  # (a stream of its own)
            frontend=self.frontend,
            replicas=self.replicas,
            new_replica=self._new_replica,
            trace=partial(self.trace.line, "operator"),
            interval_ms=max(1, config.membership_ms),
            end_ms=self.phase.faults_end_ms,
        )

    def _replica(self, name: str) -> ReplicaNode:
        store = SimStore(initial=self.initial, unsafe_no_intent=self.config.control == "no_intent")
        return ReplicaNode(name, store=store, **self._process_parts(name))

    def _order_replica(self, name: str) -> OrderNode:
        store = SimStore(machine=OrderSim())
        return OrderNode(
            name, recovery_ms=self.config.recovery_ms, store=store, **self._process_parts(name)
        )

    def _process_parts(self, name: str) -> dict[str, Any]:
        """What every replica process of the world shares, whatever its tier."""
        return {
            "loop": self.loop,
            "network": self.network,
            "observer": self.checks,
            "trace": partial(self.trace.line, name),
            "timing": self.config.timing(),
            "limits": self.limits,
            "disk": self.disk,
            "controls": self.config.controls(),
        }

    def _new_replica(self, tier: str, name: str) -> ReplicaNode:
        """A replica the operator adds: a fresh store (the catalog's seeded as every
        replica's is), its own clock."""
        self.loop.hosts[name] = Host(name, rate=1.0, offset_ms=self.restart_rng.randint(0, 9999))
        if tier == ORDER_TIER:
            return self._order_replica(name)
        return self._replica(name)

    def _client(self, index: int, seed: int) -> Client:
        return Client(
            index,
            loop=self.loop,
            network=self.network,
            history=self.history,
            checks=self.checks,
            rng=random.Random(seed),
            phase=self.phase,
            workload=self.config.workload,
            limits=self.limits,
            trace=partial(self.trace.line, f"client{index}"),
        )

    # ---------------------------------------------------------------- the run

    def run(self) -> Report:
        try:
            self._run_phases()
            check_end(
                self.checks,
                self.history,
                self.initial,
                # (A removed replica's store is no longer the service's.)
                {name: node.store for name, node in self.replicas.items() if not node.retired},
                float(self.loop.now_ms),
            )
        except (Violation, StoreError) as error:
            return self._report(False, f"{type(error).__name__}: {error}")
        except Exception:  # any other exception (a core assertion) is a failure too
            return self._report(False, traceback.format_exc())
        return self._report(True, "ok")

    def _run_phases(self) -> None:
        for node in self.replicas.values():
            node.boot()
        self.frontend.boot()
        for client in self.clients:
            client.start()
        self.nemesis.start(WARMUP_MS)
        if self.config.membership_ms:
            self.operator.start(WARMUP_MS)
        self.loop.run(self.phase.faults_end_ms)
        self._start_liveness()
        self.loop.after(PROBE_MS, None, None, self._probe)
        deadline_ms = self.loop.now_ms + self._liveness_ms()
        if not self.loop.run(deadline_ms, lambda: self.converged):
            raise Violation(
                f"liveness: not converged {self._liveness_ms()} ms after the faults\n"
                + self._state()
            )

    def _liveness_ms(self) -> int:
        limits = self.limits
        return 5 * (self.config.lease_ms * 2) + 2 * limits.client_timeout_ms + 5_000

    def _start_liveness(self) -> None:
        """Heal everything, restart every process, calm the network."""
        self.phase.liveness = True
        self.network.weather = Weather(0.0, 0.0, 1, 2.0)
        self.trace.line("nemesis", "fault=liveness")
        self.nemesis.heal_all()
        if not self.config.restart_all:
            return
        for name, node in sorted(self.replicas.items()):
            if node.retired:
                continue
            node.crash()
            self.trace.line("nemesis", f"fault=crash node={name}")
            delay = self.restart_rng.randint(1, 200)
            self.loop.after(delay, None, None, partial(self._restart, node))

    def _restart(self, node: ReplicaNode) -> None:
        if not node.host.up and not node.retired:
            node.restart()
            self.trace.line("nemesis", f"fault=restart node={node.name}")

    def _probe(self) -> None:
        self.converged = self._is_converged()
        if not self.converged:
            self.loop.after(PROBE_MS, None, None, self._probe)

    def _is_converged(self) -> bool:
        """Every operation ended, and every replica is in the view with the same committed
        data (an uncommitted staged suffix may stay until the next write overwrites it)."""
        if not all(client.finished for client in self.clients):
            return False
        tiers = self._tiers()
        if self.operator.running or not all(
            self._tier_converged(tier, names) for tier, names in tiers.items()
        ):
            return False
        if ORDER_TIER not in tiers:
            return True
        # Orders == sales: the reconciler has recorded the order of every sale.
        catalog = self.replicas[tiers[TIER][0]].store.rows["purchases"]
        sold = {key for key, row in catalog.items() if row["status"] == "ok"}
        ordered = self.replicas[tiers[ORDER_TIER][0]].store.rows["orders"]
        return sold == set(ordered)

    def _tiers(self) -> dict[str, list[str]]:
        """Each tier's replicas now (the operator adds and removes some)."""
        tiers: dict[str, list[str]] = {}
        for name, node in sorted(self.replicas.items()):
            if not node.retired:
                tiers.setdefault(node.tier, []).append(name)
        return tiers

    def _tier_converged(self, tier: str, names: list[str]) -> bool:
        view = self.frontend.view(tier)
        if view is None or sorted((view.primary, *view.backups)) != sorted(names):
            return False
        if sorted(member.name for member in view.members) != sorted(names):
            return False
        digests = set()
        for name in names:
            node = self.replicas[name]
            core = node.core
            expected = "primary" if name == view.primary else "backup"
            if core is None or node.host.paused or core.epoch != view.epoch:
                return False
            driver = node.live()
            if core.role != expected or driver.batch or node.busy or node.store.open:
                return False
            if core.inflight is not None or (expected == "primary" and core.staged):
                return False  # a batch or a promotion under way
            if isinstance(node, OrderNode) and node.inflight:
                return False
            digests.add(repr(node.store.digest()))
        return len(digests) == 1

    def _state(self) -> str:
        """Where every process stands (for a liveness failure)."""
        views = {tier: self.frontend.view(tier) for tier in self.tiers}
        lines = [f"frontend up={self.frontend.host.up} views={views}"]
        for name, node in sorted(self.replicas.items()):
            core, store = node.core, node.store
            inflight = None if core is None or core.inflight is None else core.inflight.kind
            lines.append(
                f"{name} up={node.host.up} paused={node.host.paused} "
                f"status={None if core is None else core.status()} inflight={inflight} "
                f"lease_until={None if core is None else core.lease_until_ms} now={node.now()} "
                f"peers={None if core is None else core.peers} "
                f"queue={None if node.driver is None else len(node.driver.queue)} "
                f"store=(epoch {store.epoch}, commit {store.commit_seq}, open {store.open})"
            )
        if ORDER_TIER in self.tiers:
            catalog = self.replicas[self._tiers()[TIER][0]].store.rows["purchases"]
            sold = {str(key) for key, row in catalog.items() if row["status"] == "ok"}
            ordered = {
                str(key) for key in self.replicas[self._tiers()[ORDER_TIER][0]].store.rows["orders"]
            }
            lines.append(
                f"orders == sales? sales without an order: {sorted(sold - ordered)}; "
                f"orders without a sale: {sorted(ordered - sold)}"
            )
        waiting = [client.name for client in self.clients if not client.finished]
        lines.append(f"clients not finished: {waiting}")
        return "\n".join(lines)

    def _report(self, ok: bool, message: str) -> Report:
        return Report(
            config=self.config,
            ok=ok,
            message=message,
            steps=self.loop.steps,
            sim_ms=self.loop.now_ms,
            trace_hash=self.trace.hexdigest(),
            tail=tuple(self.trace.tail),
            operations=len(self.history),
            transitions=tuple(sorted(self.trace.kinds.items())),
        )


def run_seed(
    seed: int, control: str | None = None, echo: Callable[[str], None] | None = None
) -> Report:
    """Run one seed (the tests' entry point)."""
    return World(draw_config(seed, control), echo).run()


def failure_text(report: Report, tail_lines: int = 80) -> str:
    lines = [
        f"FAILED seed={report.config.seed} control={report.config.control}: {report.message}",
        f"config: {report.config.summary()}",
        f"steps={report.steps} sim_ms={report.sim_ms} operations={report.operations}",
        "last transitions:",
        *report.tail[-tail_lines:],
        f"replay: {report.replay()}",
        f"python {sys.version.split()[0]}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    if not __debug__:
        raise SystemExit("the simulator relies on assertions: run it without -O")
    parser = argparse.ArgumentParser(prog="python -m bazar.testing.sim", description=__doc__)
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--count", type=int, default=1, help="how many seeds from --seed")
    parser.add_argument("--trace", action="store_true", help="print every transition")
    parser.add_argument("--control", choices=CONTROLS, help="run with a deliberate bug")
    args = parser.parse_args(argv)
    failed = 0
    for seed in range(args.seed, args.seed + args.count):
        report = run_seed(seed, args.control, print if args.trace else None)
        if report.ok:
            print(
                f"seed={seed} ok steps={report.steps} sim_ms={report.sim_ms} "
                f"ops={report.operations} hash={report.trace_hash[:16]}"
            )
            if args.trace:
                print(" ".join(f"{kind}={count}" for kind, count in report.transitions))
        else:
            failed += 1
            print(failure_text(report, 0 if args.trace else 80))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
