"""The clients of the failover tests: buyers that retry one idempotency key until its answer is
definite, readers through the front end, and the ledger of everything they were told.

Rules:
1. A purchase is one operation per idempotency key. Its buyer retries the SAME key after a 503,
   an `idempotency_key_in_use` or no answer, until the answer is definite (or the load stops:
   `resolve` then finishes it), and the history (`history.py`) records the key as one `buy`,
   invoked before its first attempt and completed by its definite answer (a key still open when
   judged is `info`). So the checker judges what a key may do, one sale somewhere between its
   first attempt and its last answer, and never takes a retry for a second buy.
2. Every attempt is kept with its own times on the history's clock (`time.monotonic`), so that
   a test can measure unavailability from its faults; the attempts still unanswered are known
   too (`Ledger.unanswered`), for failure messages.
3. Reads go through the front end: `/info/{id}` and `/search/{topic}` are recorded as reads of
   each book's stock (one `/search` answer reads every book it lists), and `/orders` pages (the
   oldest, or the one after the newest acknowledged order: a read after a write) are counted.
   A read answered anything but 200 is a failure, kept with its time, path and body. Past
   READS_RECORDED_PER_BOOK_MAX reads of a book, its reads are still made but not recorded.
4. The history is not thread-safe: every call to it holds the ledger's lock.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bazar.testing import checker
from bazar.testing.cluster import Cluster, wait_until
from bazar.testing.history import History

BUYERS = 8
READERS = 4
READER_PROCESS_FIRST = 100  # history process ids of the readers (buyers are 0..BUYERS-1)
QUANTITY_MAX = 3
CLIENT_TIMEOUT_S = 10.0  # above the front end's write timeout (5 s): it answers first
UNAVAILABLE_PAUSE_S = 0.05  # a buyer's pacing after an indefinite answer, not a synchronisation
ACKS_DEADLINE_S = 15.0
RESOLVE_DEADLINE_S = 15.0
ORDERS_PAGE = 100
# Reads recorded in the history per book, so that a fast machine stays well inside the
# checker's bound (`checker.OPERATIONS_PER_BOOK_MAX`, buys included); later reads are still
# made and their statuses checked.
READS_RECORDED_PER_BOOK_MAX = 5000
assert READS_RECORDED_PER_BOOK_MAX <= checker.OPERATIONS_PER_BOOK_MAX // 2, "room for the buys"
READ_DETAIL_BYTES_MAX = 200


@dataclass(frozen=True, slots=True)
class Attempt:
    """One purchase request and its answer as the buyer saw it; status 0 when none came."""

    status: int
    code: str | None
    order_id: str | None
    retry_after: str | None
    invoke_s: float
    complete_s: float

    @property
    def definite(self) -> bool:
        """200 (done) or a definite refusal; 503, no answer and `idempotency_key_in_use`
        leave the outcome unknown, and the buyer retries the same key."""
        if self.status == 200:
            return True
        return 400 <= self.status < 500 and self.code != "idempotency_key_in_use"

    @property
    def expected(self) -> bool:
        """What a purchase may answer with ample stock under a fault (docs/contract.md §2, §8)."""
        if self.status == 200:
            return self.order_id is not None
        if self.status == 503:
            return self.code == "unavailable" and self.retry_after is not None
        if self.status == 409:
            return self.code == "idempotency_key_in_use"
        return self.status == 0

    def describe(self, origin_s: float) -> str:
        return (
            f"{self.status} {self.code or ''} sent at {self.invoke_s - origin_s:+.3f} s, "
            f"answered at {self.complete_s - origin_s:+.3f} s"
        )


@dataclass
class Purchase:
    """One idempotency key: its book, quantity, history operation and every attempt."""

    key: str
    book_id: int
    quantity: int
    index: int
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def resolved(self) -> bool:
        return any(attempt.definite for attempt in self.attempts)

    @property
    def order_ids(self) -> set[str]:
        return {a.order_id for a in self.attempts if a.order_id is not None}


class Ledger:
    """Every purchase, attempt and read the clients made; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.history = History()
        self.purchases: dict[str, Purchase] = {}
        self.sent: dict[int, float] = {}  # thread id -> when its unanswered attempt was sent
        self.reads = 0
        self.reads_recorded: Counter[int] = Counter()
        self.read_failures: list[tuple[float, str, int, str]] = []
        self.newest_order_id: str | None = None

    def open(self, process: int, book_id: int, quantity: int) -> Purchase:
        """A new key, its history operation invoked now (before its first attempt)."""
        with self.lock:
            index = self.history.invoke(process, "buy", book_id, quantity)
            purchase = Purchase(uuid.uuid4().hex, book_id, quantity, index)
            self.purchases[purchase.key] = purchase
        return purchase

    def attempt(self, cluster: Cluster, purchase: Purchase) -> Attempt:
        """One request for `purchase` (its key, book and quantity); a definite answer
        completes its history operation."""
        assert not purchase.resolved, f"key {purchase.key} retried after a definite answer"
        with self.lock:
            self.sent[threading.get_ident()] = time.monotonic()
        attempt = send_purchase(cluster, purchase)
        with self.lock:
            del self.sent[threading.get_ident()]
            purchase.attempts.append(attempt)
            if attempt.status == 200:
                self.history.ok(purchase.index, attempt.order_id)
                self.newest_order_id = attempt.order_id
            elif attempt.definite:
                self.history.fail(purchase.index, attempt.code)
        return attempt

    def snapshot(self) -> list[Purchase]:
        with self.lock:
            return [
                Purchase(p.key, p.book_id, p.quantity, p.index, list(p.attempts))
                for p in self.purchases.values()
            ]

    def attempts(self) -> list[Attempt]:
        return [attempt for purchase in self.snapshot() for attempt in purchase.attempts]

    def unanswered(self) -> list[float]:
        """When each attempt still waiting for its answer was sent."""
        with self.lock:
            return sorted(self.sent.values())

    def acks_invoked_after(self, since_s: float) -> int:
        return sum(1 for a in self.attempts() if a.status == 200 and a.invoke_s >= since_s)

    def read(self, path: str, status: int, raw: bytes, *, complete: bool = True) -> None:
        """Count a read; keep it as a failure unless it was answered 200 with what it asked
        for (`complete`)."""
        with self.lock:
            self.reads += 1
            if status != 200 or not complete:
                detail = raw[:READ_DETAIL_BYTES_MAX].decode(errors="replace")
                self.read_failures.append((time.monotonic(), path, status, detail))


def send_purchase(cluster: Cluster, purchase: Purchase) -> Attempt:
    invoke_s = time.monotonic()
    status, headers, raw = cluster.request(
        "POST",
        f"/purchase/{purchase.book_id}",
        body=json.dumps({"quantity": purchase.quantity}).encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": purchase.key},
        timeout_s=CLIENT_TIMEOUT_S,
    )
    complete_s = time.monotonic()
    body = _decoded(raw)
    error = body.get("error") if isinstance(body, dict) else None
    order = body.get("order") if isinstance(body, dict) and status == 200 else None
    order_id = order.get("id") if isinstance(order, dict) else None
    return Attempt(
        status=status,
        code=str(error.get("code")) if isinstance(error, dict) else None,
        order_id=str(order_id) if order_id is not None else None,
        retry_after=headers.get("retry-after"),
        invoke_s=invoke_s,
        complete_s=complete_s,
    )


def _decoded(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


class Load:
    """BUYERS threads buying the books (one key at a time, retried until definite or
    stopped) and READERS threads reading them through the front end, until stopped."""

    def __init__(
        self, cluster: Cluster, ledger: Ledger, book_ids: Sequence[int], topic: str
    ) -> None:
        self.cluster = cluster
        self.ledger = ledger
        self.book_ids = list(book_ids)
        self.topic = topic  # every book's: `/search/{topic}` lists them all
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._buy, args=(n,)) for n in range(BUYERS)]
        self.threads += [
            threading.Thread(target=self._read, args=(READER_PROCESS_FIRST + n,))
            for n in range(READERS)
        ]

    def _buy(self, process: int) -> None:
        rng = random.Random(process)
        while not self.stopped.is_set():
            book_id, quantity = rng.choice(self.book_ids), rng.randint(1, QUANTITY_MAX)
            purchase = self.ledger.open(process, book_id, quantity)
            while not self.ledger.attempt(self.cluster, purchase).definite:
                if self.stopped.wait(UNAVAILABLE_PAUSE_S):
                    break  # left open: `resolve` retries it after the load

    def _read(self, process: int) -> None:
        rng = random.Random(process)
        while not self.stopped.is_set():
            roll = rng.random()
            if roll < 0.6:
                self._read_books(process, [rng.choice(self.book_ids)])
            elif roll < 0.85:
                self._read_books(process, self.book_ids)
            else:
                self._read_orders(rng)

    def _read_books(self, process: int, book_ids: Sequence[int]) -> None:
        """`/info/{id}` for one book, `/search/{topic}` for all: a read of each one's stock."""
        path = f"/info/{book_ids[0]}" if len(book_ids) == 1 else f"/search/{self.topic}"
        history = self.ledger.history
        with self.ledger.lock:
            recorded = self.ledger.reads_recorded
            indexes = {
                book_id: history.invoke(process, "read", book_id)
                for book_id in book_ids
                if recorded[book_id] < READS_RECORDED_PER_BOOK_MAX
            }
            recorded.update(indexes.keys())
        status, _, raw = self.cluster.request("GET", path, timeout_s=CLIENT_TIMEOUT_S)
        body = _decoded(raw)
        data = body.get("data") if status == 200 and isinstance(body, dict) else None
        books = data if isinstance(data, list) else [data]
        stocks = {b["id"]: b["stock"] for b in books if isinstance(b, dict) and "id" in b}
        with self.ledger.lock:
            for book_id, index in indexes.items():
                stock = stocks.get(book_id)
                if isinstance(stock, int):
                    history.ok(index, stock)
                else:
                    history.fail(index, f"status {status}")
        self.ledger.read(path, status, raw, complete=set(stocks) == set(book_ids))

    def _read_orders(self, rng: random.Random) -> None:
        """The oldest page, or the page after the newest acknowledged order (read after
        write: that order is committed, so every replica knows it as `after`)."""
        newest = self.ledger.newest_order_id
        path = f"/orders?limit={ORDERS_PAGE}"
        if newest is not None and rng.random() < 0.5:
            path += f"&after={newest}"
        status, _, raw = self.cluster.request("GET", path, timeout_s=CLIENT_TIMEOUT_S)
        self.ledger.read(path, status, raw)


@contextlib.contextmanager
def running_load(
    cluster: Cluster, ledger: Ledger, book_ids: Sequence[int], topic: str
) -> Iterator[Load]:
    """The load, stopped (and every client thread joined) when the block ends."""
    load = Load(cluster, ledger, book_ids, topic)
    for thread in load.threads:
        thread.start()
    try:
        yield load
    finally:
        load.stopped.set()
        for thread in load.threads:
            thread.join(timeout=2 * CLIENT_TIMEOUT_S)
        assert not any(thread.is_alive() for thread in load.threads), "a client hangs"


def wait_for_acks(ledger: Ledger, count: int, since_s: float, what: str) -> None:
    wait_until(
        lambda: ledger.acks_invoked_after(since_s) >= count,
        ACKS_DEADLINE_S,
        f"{count} purchases acknowledged {what}",
    )


def hold_load_until(at_s: float, what: str) -> None:
    """Let the load run until the monotonic clock reaches `at_s`: a length of load, so that
    the answers after a fault are observed, not a synchronisation."""
    wait_until(lambda: time.monotonic() >= at_s, max(0.0, at_s - time.monotonic()) + 1, what)


def resolve(cluster: Cluster, ledger: Ledger) -> int:
    """Retry every key still without a definite answer, with the SAME key, BUYERS at a time,
    until each has one (RESOLVE_DEADLINE_S in all); returns how many keys were retried.

    Raises: AssertionError naming keys that never got a definite answer.
    """
    keys = [p.key for p in ledger.snapshot() if not p.resolved]
    deadline = time.monotonic() + RESOLVE_DEADLINE_S

    def settle(key: str) -> None:
        purchase = ledger.purchases[key]
        with contextlib.suppress(TimeoutError):
            wait_until(
                lambda: ledger.attempt(cluster, purchase).definite,
                max(0.1, deadline - time.monotonic()),
                f"key {key} definite",
            )

    for start in range(0, len(keys), BUYERS):
        threads = [threading.Thread(target=settle, args=(k,)) for k in keys[start : start + BUYERS]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=RESOLVE_DEADLINE_S + 2 * CLIENT_TIMEOUT_S)
    left = [p for p in ledger.snapshot() if not p.resolved]
    assert left == [], f"{len(left)} keys still indefinite after {RESOLVE_DEADLINE_S} s of " + (
        f"retries with the same key: {[(p.key, p.attempts[-1]) for p in left[:3]]}"
    )
    return len(keys)
