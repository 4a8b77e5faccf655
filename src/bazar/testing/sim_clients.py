"""Simulated clients: buyers, restockers and readers behind the front end, each recording a
Jepsen history in simulated time.

Why one operation per idempotency key (as `testing/harness.py` rule 1): a client retries
the SAME key after an indefinite answer, so the history holds one `buy` per key, invoked
before its first attempt and completed by its first definite answer; after
`attempts_max` indefinite answers it is `info` (it may or may not have happened). In the
liveness phase a write retries until it gets a definite answer: every operation must end.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from bazar.replication.ready import FRONTEND
from bazar.testing.history import History, Kind
from bazar.testing.sim_checks import Checks, SeenRead
from bazar.testing.sim_frontend import ClientRead, ClientWrite
from bazar.testing.sim_network import Action, Done, Failure, Loop, Network
from bazar.testing.sim_replica import ReadReply, SimLimits
from bazar.testing.sim_store import Buy, Command, Outcome, Restock


@dataclass(slots=True)
class Phase:
    """Where the run is: clients start new operations until `faults_end_ms`, then
    `live_ops` more each in the liveness phase."""

    faults_end_ms: int
    liveness: bool = False


@dataclass(frozen=True, slots=True)
class Workload:
    books: tuple[int, ...]
    ops_max: int
    live_ops: int
    think_ms_max: int
    attempts_max: int
    backoff_ms: int
    read_share: float
    restock_share: float


@dataclass(slots=True)
class WriteOp:
    index: int
    command: Command
    attempts: int = 0


class Client:
    """One client process: one operation at a time."""

    def __init__(
        self,
        index: int,
        *,
        loop: Loop,
        network: Network,
        history: History,
        checks: Checks,
        rng: random.Random,
        phase: Phase,
        workload: Workload,
        limits: SimLimits,
        trace: Callable[[str], None],
    ) -> None:
        self.index = index
        self.name = f"client{index}"
        self.loop = loop
        self.network = network
        self.history = history
        self.checks = checks
        self.rng = rng
        self.phase = phase
        self.workload = workload
        self.limits = limits
        self.trace = trace
        self.started = 0
        self.live_started = 0
        self.finished = False
        self.write: WriteOp | None = None

    def start(self) -> None:
        self._later(self.rng.randint(0, self.workload.think_ms_max), self._next)

    def _later(self, delay_ms: int, action: Action) -> None:
        self.loop.after(delay_ms, self.name, None, action)

    def _next(self) -> None:
        workload = self.workload
        if self.started >= workload.ops_max or (
            self.phase.liveness and self.live_started >= workload.live_ops
        ):
            self.finished = True
            return
        if not self.phase.liveness and self.loop.now_ms >= self.phase.faults_end_ms:
            self._later(workload.think_ms_max + 1, self._next)  # wait for the liveness phase
            return
        self.started += 1
        self.live_started += int(self.phase.liveness)
        rng = self.rng
        book_id = rng.choice(workload.books)
        draw = rng.random()
        key = uuid.UUID(int=rng.getrandbits(128)).hex
        if draw < workload.read_share:
            index = self.history.invoke(self.index, "read", book_id)
            self._call(
                ClientRead(book_id), lambda answer: self._read_answer(index, book_id, answer)
            )
            return
        kind: Kind
        command: Command
        if draw < workload.read_share + workload.restock_share:
            delta = rng.choice((-2, 1, 2, 3, 5))
            kind, command, argument = "restock", Restock(key, book_id, delta), delta
        else:
            quantity = rng.randint(1, 2)
            kind, command, argument = "buy", Buy(key, book_id, quantity), quantity
        index = self.history.invoke(self.index, kind, book_id, argument)
        self.checks.commands[index] = command
        self.write = WriteOp(index, command)
        self._attempt()

    def _call(self, request: object, on_done: Done) -> None:
        self.network.call(self.name, FRONTEND, request, self.limits.client_timeout_ms, on_done)

    def _done(self) -> None:
        self.write = None
        self._later(self.rng.randint(0, self.workload.think_ms_max), self._next)

    def _read_answer(self, index: int, book_id: int, answer: object) -> None:
        if isinstance(answer, ReadReply):
            self.history.ok(index, answer.stock)
            self.checks.reads.append(SeenRead(book_id, answer.stock, answer.version))
            self.trace(f"op=read book={book_id} ok stock={answer.stock} at={answer.version}")
        else:
            assert isinstance(answer, Failure), answer
            self.history.fail(index, answer.reason)
            self.trace(f"op=read book={book_id} fail {answer.reason}")
        self._done()

    def _attempt(self) -> None:
        op = self.write
        assert op is not None
        op.attempts += 1
        self._call(ClientWrite(op.command), self._write_answer)

    def _write_answer(self, answer: object) -> None:
        op = self.write
        assert op is not None
        if isinstance(answer, Outcome):
            self.checks.acked[op.command.key] = (op.command, answer)
            self.trace(f"op={op.command} {answer.status} stock={answer.stock}")
            if answer.status == "ok":
                result = answer.stock if isinstance(op.command, Restock) else op.command.key
                self.history.ok(op.index, result)
            else:
                self.history.fail(op.index, "out_of_stock")
            self._done()
            return
        assert isinstance(answer, Failure), answer
        if self.phase.liveness or op.attempts < self.workload.attempts_max:
            self._later(self.rng.randint(1, self.workload.backoff_ms), self._attempt)
            return
        self.history.info(op.index, answer.reason)
        self.trace(f"op={op.command} info {answer.reason}")
        self._done()
