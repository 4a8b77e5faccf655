"""A replica driven by hand, through the production driver: for tests that choose every
event and every delivery themselves (`tests/unit/test_replication_replica.py`,
`tests/sim/test_scenarios.py`).

Why: the order in which a step's effects happen is itself the protocol, and
`replication/driver.py` is the one place that applies it. A test that persisted a `Ready`
and called `advance` itself would test its own copy of that order, and a test that built a
`Replica` from its own idea of the disk would test its own copy of `boot`. So a process here
is the production `Driver` over a `SimStore` (SQLite's transaction and durability rules),
started by `driver.boot`, with a `RecordingHost` that keeps what the driver did (sends,
answers, replies, transitions) for the test to look at. `apply` runs one step and `write`
one batch; neither applies an effect itself.

`sim_replica.ReplicaNode` is the same driver's host in the simulator, but it owns a network,
timers and a step queue: a test there cannot hold a message back, deliver it twice, or hand
a step a `Ready` it computed at a moment of its choosing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bazar.errors import BazarError
from bazar.replication.driver import SAFE, Controls, Driver, boot
from bazar.replication.ready import Ready, Send
from bazar.replication.replica import Notify, Replica, Timing
from bazar.testing.sim_store import Command, Outcome, SimStore
from bazar.wire import AppendReply, Entry

TIER = "catalog"
BATCH_COMMANDS_MAX = 8
QUEUED_MAX = 64


@dataclass(frozen=True, slots=True)
class Settled:
    """A queued write's answer: its result, or the error (an aborted batch: `Refused` when
    definite, `Abandoned` when its outcome is unknown)."""

    handle: str
    result: Outcome | None
    error: BazarError | None


@dataclass(slots=True)
class RecordingHost:
    """The driver's `Host`, keeping everything it is asked to do. Its clock is `now`, set
    by the test (`apply` and `write` take it)."""

    now: int = 0
    sent: list[Send] = field(default_factory=list)
    settled: list[Settled] = field(default_factory=list)
    replies: list[tuple[str, AppendReply]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def now_ms(self) -> int:
        return self.now

    def transmit(self, send: Send) -> None:
        self.sent.append(send)

    def settle(self, handle: str, result: Outcome | None, error: BazarError | None) -> None:
        self.settled.append(Settled(handle, result, error))

    def reply(self, handle: str, reply: AppendReply) -> None:
        self.replies.append((handle, reply))

    def log(self, line: str) -> None:
        self.lines.append(line)

    def errors(self) -> list[BazarError]:
        """The writes answered with an error, in order."""
        return [settled.error for settled in self.settled if settled.error is not None]


@dataclass(eq=False, slots=True)
class Process:
    """One replica process: its store (which outlives it), the driver and its host."""

    store: SimStore
    driver: Driver[Command, Outcome, str]
    host: RecordingHost

    @property
    def core(self) -> Replica:
        return self.driver.core

    @property
    def name(self) -> str:
        return self.driver.core.name


def start(
    name: str,
    store: SimStore,
    *,
    timing: Timing,
    notify: Notify | None = None,
    pid: int = 1,
    now_ms: int = 0,
    host: RecordingHost | None = None,
    controls: Controls = SAFE,
) -> Process:
    """Start a process from what `store` holds (`driver.boot`, as the runtime does)."""
    core = boot(
        store,
        name=name,
        tier=TIER,
        pid=pid,
        incarnation=f"{name}.{pid}",
        timing=timing,
        notify=notify,
    )
    host = RecordingHost(now=now_ms) if host is None else host
    driver: Driver[Command, Outcome, str] = Driver(
        core,
        store,
        host,
        batch_commands_max=BATCH_COMMANDS_MAX,
        queued_max=QUEUED_MAX,
        controls=controls,
    )
    return Process(store=store, driver=driver, host=host)


Event = Callable[[int], Ready]


def apply(
    process: Process,
    event: Ready | Event,
    *,
    now_ms: int | None = None,
    reply_to: str | None = None,
) -> Ready:
    """One step of `process`: `driver.decide`, `persist`, `complete`. `event` is a core
    step (it runs at the host's clock, `now_ms` when given) or a `Ready` the test already
    computed from the core. With `reply_to` (an Append's or a snapshot's sender), the
    driver's reply to it is recorded in `host.replies`."""
    if now_ms is not None:
        process.host.now = now_ms
    driver = process.driver
    ready = driver.decide(event if not isinstance(event, Ready) else _computed(event), reply_to)
    return _persist_and_complete(driver, ready, reply_to)


def write(
    process: Process, commands: Sequence[Command], *, now_ms: int | None = None
) -> tuple[Entry | None, Ready | None]:
    """Queue `commands` (each settled under its key) and run them as one batch, as the
    runtime does: `take_batch`, `begin` (the open transaction that logs the entry),
    `propose`, then the step's `persist` and `complete`, then the intent. Returns the entry
    logged (None: the commands changed nothing) and the step (None likewise).

    Raises: what `driver.submit` raises (the write is refused before it is queued)."""
    if now_ms is not None:
        process.host.now = now_ms
    driver = process.driver
    for command in commands:
        driver.submit(command, command.key)
    taken = driver.take_batch()
    assert taken is not None, f"{process.name} may not start a batch now"
    entry, results = driver.begin(taken)
    ready = driver.propose(taken, entry, results)
    if ready is None:
        return None, None
    assert entry is not None
    _persist_and_complete(driver, ready, None)
    if driver.intent_due(entry):
        driver.write_intent(entry)
    return entry, ready


def _computed(ready: Ready) -> Event:
    def event(_now_ms: int) -> Ready:
        return ready

    return event


def _persist_and_complete(
    driver: Driver[Command, Outcome, str], ready: Ready, reply_to: str | None
) -> Ready:
    driver.persist(ready)
    driver.complete(ready, reply_to)
    return ready
