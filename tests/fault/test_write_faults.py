"""Writes under faults: no acknowledged purchase is lost, none is sold twice, every sale has
exactly one order, and the replicas converge (docs/contract.md §3.1, §3.3, §3.4, §3.6 and §8
"Faults").

Goal: each test fails if a kill -9 or a pause of one replica loses an acknowledged purchase,
sells one twice, leaves a sale without its order (or an order without its sale), oversells,
leaves replicas different, or answers a write with anything but 200 or 503 `unavailable`.

Method: a real 2+2 cluster seeded with 3 books of ample stock, so that every purchase can
succeed and a lost or extra sale shows in the counts. 8 client threads buy in a loop, each
purchase under a fresh Idempotency-Key, recorded as a Jepsen-shaped history (`history.py`):
200 is `ok` (with its order id), a definite 4xx is `fail`, a 503 or no answer is `info`
(outcome unknown). The nemesis acts on a replica's pid from `/cluster`: kill -9, or SIGSTOP
then SIGCONT. Every wait is `wait_until` on an observable condition (a new pid in sync,
`/health`, acknowledgements of purchases sent after the recovery), with a deadline; nothing
is timed. Then, in two stages, the state of EVERY replica (internal routes, cluster secret)
is compared with what the clients were told:
1. at quiescence before any retry (each tier's digests equal, as many orders as sales: the
   order primary's reconciler has recorded what the fault left without one): every acknowledged
   order is on every order replica; the catalog holds exactly one sale per order, and
   initial stock - stock == the quantities ordered, per book, on every catalog replica;
   purchases refused while a backup was unreachable (503 "the catalog cannot take sales
   now") were not done;
2. every key whose last answer was `info` is retried with the SAME key until definite, as
   clients are told to; then every key has exactly one order, on every order replica, with
   the order id its client got (a sample of acknowledged keys, replayed, returns that same
   order), conservation holds per book on every catalog replica, stock >= 0, and each tier's
   digests (tables with idempotency records, log position) are identical.
This version has no failover (docs/design.md, "Failures"): a dead primary comes back through
`bazar up`'s supervisor with a new epoch, and a dead backup blocks writes until it returns,
so the test without restarts starts the dead backup again by hand (`bazar serve`, the command
the supervisor runs) before it retries.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bazar.testing.cluster import Cluster, served_by_hand, wait_until
from bazar.testing.history import History, Outcome
from bazar.testing.workload import ReadLoad, write_catalog

STOCKS = {1: 1_000_000, 2: 1_000_000, 3: 1_000_000}
TOPIC = "Write Faults"
TIERS = ("catalog", "order")
CLIENTS = 8
PROBE_WORKERS = 64
CLIENT_TIMEOUT_S = 10.0  # above the front end's write timeout (5 s): it answers first
CLIENT_PAUSE_AFTER_UNAVAILABLE_S = 0.05  # a client's pacing after a 503, not a synchronisation
ACKS_BEFORE_FAULT = 100
ACKS_AFTER_RECOVERY = 100
RECOVERY_DEADLINE_S = 20.0
LOAD_DEADLINE_S = 20.0
QUIESCENCE_DEADLINE_S = 15.0
RETRY_DEADLINE_S = 20.0
RETRY_ATTEMPTS_MAX = 100
REPLAYS_MAX = 60
PAUSE_S = 2.0
WRITE_GAP_S = 2.0  # docs/contract.md §3.5: writes resume within 2 s of a fault, measured from it
RETRY_PROCESS = 1000
PROBE_PROCESS = 2000
REFUSED_MESSAGE = "cannot take sales now"  # the order service's words for "definitely not done"


# ---------------------------------------------------------------- the clients' record


@dataclass(frozen=True)
class Answer:
    """One purchase answer as a client saw it; status 0 when none came."""

    status: int
    code: str | None
    message: str
    order: dict[str, Any] | None
    replayed: bool
    retry_after: str | None
    invoke_s: float
    complete_s: float

    @property
    def outcome(self) -> Outcome:
        if self.status == 200:
            return "ok"
        if 400 <= self.status < 500 and self.code != "idempotency_key_in_use":
            return "fail"
        return "info"

    @property
    def expected(self) -> bool:
        """What a write may answer under these faults (docs/contract.md §2, §8 Faults)."""
        if self.status == 200:
            return self.order is not None
        if self.status == 503:
            return self.code == "unavailable" and self.retry_after is not None
        return self.status == 0  # no answer (connection lost, client timeout)

    @property
    def refused(self) -> bool:
        """A 503 the order service gave for a sale the catalog refused before doing it."""
        return self.status == 503 and REFUSED_MESSAGE in self.message


@dataclass
class Purchase:
    key: str
    book_id: int
    quantity: int
    answers: list[Answer] = field(default_factory=list)

    @property
    def final(self) -> Answer:
        return self.answers[-1]

    @property
    def order_ids(self) -> set[str]:
        return {str(a.order["id"]) for a in self.answers if a.order is not None}

    @property
    def acknowledged(self) -> bool:
        return any(answer.status == 200 for answer in self.answers)


def send_purchase(cluster: Cluster, key: str, book_id: int, quantity: int) -> Answer:
    invoke_s = time.monotonic()
    try:
        status, headers, raw = cluster.request(
            "POST",
            f"/purchase/{book_id}",
            body=json.dumps({"quantity": quantity}).encode(),
            headers={"Content-Type": "application/json", "Idempotency-Key": key},
            timeout_s=CLIENT_TIMEOUT_S,
        )
    except (OSError, http.client.HTTPException):
        status, headers, raw = 0, {}, b""
    complete_s = time.monotonic()
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    order = body.get("order") if isinstance(body, dict) and status == 200 else None
    return Answer(
        status=status,
        code=str(error.get("code")) if isinstance(error, dict) else None,
        message=str(error.get("message", "")) if isinstance(error, dict) else "",
        order=order if isinstance(order, dict) else None,
        replayed=headers.get("idempotent-replayed") == "true",
        retry_after=headers.get("retry-after"),
        invoke_s=invoke_s,
        complete_s=complete_s,
    )


class Ledger:
    """Every purchase the clients made and every answer they got; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.history = History()
        self.purchases: dict[str, Purchase] = {}

    def buy(self, cluster: Cluster, process: int, key: str, book_id: int, quantity: int) -> Answer:
        with self.lock:
            purchase = self.purchases.setdefault(key, Purchase(key, book_id, quantity))
            assert (purchase.book_id, purchase.quantity) == (book_id, quantity)
            index = self.history.invoke(process, "buy", book_id, quantity)
        answer = send_purchase(cluster, key, book_id, quantity)
        with self.lock:
            purchase.answers.append(answer)
            if answer.outcome == "ok":
                assert answer.order is not None, answer
                self.history.ok(index, str(answer.order["id"]))
            elif answer.outcome == "fail":
                self.history.fail(index, answer.code)
            else:
                self.history.info(index, answer.code or f"status {answer.status}")
        return answer

    def retry(self, cluster: Cluster, key: str) -> Answer:
        purchase = self.purchases[key]
        return self.buy(cluster, RETRY_PROCESS, key, purchase.book_id, purchase.quantity)

    def snapshot(self) -> list[Purchase]:
        with self.lock:
            return [
                Purchase(p.key, p.book_id, p.quantity, list(p.answers))
                for p in self.purchases.values()
                if p.answers
            ]

    def answers(self) -> list[Answer]:
        return [answer for purchase in self.snapshot() for answer in purchase.answers]

    def acks_invoked_after(self, since_s: float) -> int:
        return sum(1 for a in self.answers() if a.status == 200 and a.invoke_s >= since_s)

    def wait_for_acks(self, count: int, since_s: float, what: str) -> None:
        wait_until(
            lambda: self.acks_invoked_after(since_s) >= count,
            LOAD_DEADLINE_S,
            f"{count} purchases acknowledged {what}",
        )

    def unexpected(self) -> list[tuple[str, Answer]]:
        return [(p.key, a) for p in self.snapshot() for a in p.answers if not a.expected]

    def unresolved(self) -> list[str]:
        return [p.key for p in self.snapshot() if p.final.outcome == "info"]


class PurchaseLoad:
    """CLIENTS threads buying until stopped, each purchase under a fresh key."""

    def __init__(
        self, cluster: Cluster, ledger: Ledger, book_ids: Sequence[int], clients: int
    ) -> None:
        self.cluster = cluster
        self.ledger = ledger
        self.book_ids = list(book_ids)
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(clients)]

    def _run(self, process: int) -> None:
        rng = random.Random(process)
        while not self.stopped.is_set():
            book_id, quantity = rng.choice(self.book_ids), rng.randint(1, 3)
            answer = self.ledger.buy(self.cluster, process, uuid.uuid4().hex, book_id, quantity)
            if answer.outcome != "ok":
                self.stopped.wait(CLIENT_PAUSE_AFTER_UNAVAILABLE_S)


@contextlib.contextmanager
def purchase_load(
    cluster: Cluster,
    ledger: Ledger,
    book_ids: Sequence[int] = tuple(STOCKS),
    clients: int = CLIENTS,
) -> Iterator[PurchaseLoad]:
    load = PurchaseLoad(cluster, ledger, book_ids, clients)
    for thread in load.threads:
        thread.start()
    try:
        yield load
    finally:
        load.stopped.set()
        for thread in load.threads:
            thread.join(timeout=3 * CLIENT_TIMEOUT_S)
        assert not any(thread.is_alive() for thread in load.threads), "a client hangs"


# ---------------------------------------------------------------- the cluster


@contextlib.contextmanager
def fault_cluster(
    directory: Path, ledger: Ledger, *, restart: bool, no_cache: bool = False
) -> Iterator[Cluster]:
    """A fresh 2+2 cluster whose catalog is STOCKS, every replica in sync; on failure its
    logs are printed (pytest shows them) and the history is kept in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    catalog = write_catalog(directory / "catalog.json", STOCKS, TOPIC)
    cluster = Cluster(
        directory / "cluster", restart=restart, catalog_file=catalog, no_cache=no_cache
    )
    with cluster:
        try:
            wait_until(lambda: all_in_sync(cluster), RECOVERY_DEADLINE_S, "every replica in sync")
            wait_until(
                lambda: supervising(cluster), RECOVERY_DEADLINE_S, "bazar up past its start-up"
            )
            yield cluster
        except BaseException:
            print(cluster.logs())
            raise
        finally:
            ledger.history.dump_jsonl(directory / "history.jsonl")


def supervising(cluster: Cluster) -> bool:
    """`bazar up` has printed its table of processes: it is past start-up, where a child
    that dies makes it stop every process and exit 1 instead of restarting it or leaving it
    down (`Supervisor.start_all`), although `/health` may already be 200 by then."""
    log = cluster.data_dir / "up.log"
    return log.exists() and log.stat().st_size > 0


def replica(cluster: Cluster, name: str) -> dict[str, Any]:
    tier = name.split("-")[0]
    entry: dict[str, Any] = next(
        r for r in cluster.cluster_info()[tier]["replicas"] if r["name"] == name
    )
    return entry


def all_in_sync(cluster: Cluster) -> bool:
    info = cluster.cluster_info()
    return all(r["state"] == "in_sync" for tier in TIERS for r in info[tier]["replicas"])


def health(cluster: Cluster) -> int:
    status, _, _ = cluster.request("GET", "/health")
    return status


def back_in_sync(cluster: Cluster, name: str, old_pid: int | None) -> bool:
    """In sync (with a new pid if `old_pid`: a new process), and the cluster healthy."""
    entry = replica(cluster, name)
    if entry["state"] != "in_sync" or (old_pid is not None and entry["pid"] == old_pid):
        return False
    return health(cluster) == 200


# ---------------------------------------------------------------- replica state


def replica_orders(cluster: Cluster, url: str) -> list[dict[str, Any]]:
    """Every order on one order replica, oldest first (paging through its internal route)."""
    orders: list[dict[str, Any]] = []
    after: str | None = None
    for _ in range(1000):
        path = "/orders?limit=1000" + (f"&after={after}" if after else "")
        status, body = cluster.internal("GET", url, path)
        assert status == 200, (url, status, body)
        orders += body["data"]
        after = body["next"]
        if after is None:
            return orders
    raise AssertionError(f"too many orders on {url}")


def replica_stocks(cluster: Cluster) -> dict[str, dict[int, int]]:
    found = {}
    for name, url in cluster.replica_urls("catalog").items():
        status, body = cluster.internal("GET", url, "/books")
        assert status == 200, (name, status, body)
        found[name] = {int(book["id"]): int(book["stock"]) for book in body["data"]}
    return found


def tier_digests(cluster: Cluster, tier: str) -> list[Any] | None:
    """Every replica's digest; None while one does not answer."""
    found = []
    for url in cluster.replica_urls(tier).values():
        status, body = cluster.internal("GET", url, "/internal/digest")
        if status != 200:
            return None
        found.append(body)
    return found


def quiescent(cluster: Cluster, seen: dict[str, Any]) -> bool:
    """Every replica in sync, each tier's digests equal, and every sale has its order (with
    ample stock every sale record is a completed sale). `seen` keeps what was observed
    last, for the failure message."""
    seen.clear()
    seen["cluster"] = cluster.cluster_info()
    if not all_in_sync(cluster):
        return False
    for tier in TIERS:
        digests = seen[tier] = tier_digests(cluster, tier)
        if digests is None or len({json.dumps(d, sort_keys=True) for d in digests}) != 1:
            return False
    sales = seen["catalog"][0]["tables"]["sales"]["rows"]
    return bool(sales == seen["order"][0]["tables"]["orders"]["rows"])


def wait_quiescent(cluster: Cluster) -> None:
    seen: dict[str, Any] = {}
    try:
        wait_until(
            lambda: quiescent(cluster, seen),
            QUIESCENCE_DEADLINE_S,
            "every replica in sync, each tier's digests equal, an order for every sale",
        )
    except TimeoutError as error:
        raise AssertionError(f"{error}; last seen: {json.dumps(seen, indent=1)}") from None


# ---------------------------------------------------------------- the checks


def check_orders_match_sales(cluster: Cluster, ledger: Ledger) -> list[dict[str, Any]]:
    """At quiescence: the order replicas hold the same orders, among them every acknowledged
    one (same id, book and quantity); the catalog has exactly one sale per order; initial
    stock - stock == the quantities ordered, per book, on every catalog replica; stock >= 0.
    Returns the orders."""
    purchases = ledger.snapshot()
    orders_by_replica = {
        name: replica_orders(cluster, url) for name, url in cluster.replica_urls("order").items()
    }
    names = sorted(orders_by_replica)
    orders = orders_by_replica[names[0]]
    for name in names[1:]:
        assert orders_by_replica[name] == orders, f"{names[0]} and {name} hold different orders"
    by_id = {order["id"]: order for order in orders}
    assert len(by_id) == len(orders), "two orders with one id"

    lost = []
    for purchase in purchases:
        ids = purchase.order_ids
        assert len(ids) <= 1, f"key {purchase.key} was given orders {ids}"
        for order_id in ids:
            order = by_id.get(order_id)
            if order is None or (order["book_id"], order["quantity"]) != (
                purchase.book_id,
                purchase.quantity,
            ):
                lost.append((purchase.key, order_id, order))
    assert lost == [], f"{len(lost)} acknowledged purchases lost or changed: {lost[:5]}"
    given = [i for p in purchases for i in p.order_ids]
    assert len(given) == len(set(given)), "two keys were given the same order"

    ordered: Counter[int] = Counter()
    for order in orders:
        ordered[int(order["book_id"])] += int(order["quantity"])
    for name, stocks in replica_stocks(cluster).items():
        for book_id, initial in STOCKS.items():
            stock = stocks[book_id]
            assert stock >= 0, (name, book_id, stock)
            assert initial - stock == ordered[book_id], (
                f"{name}, book {book_id}: sold {initial - stock}, ordered {ordered[book_id]}"
            )
    digests = cluster.digests("catalog")
    for name, digest in digests.items():
        assert digest["tables"]["sales"]["rows"] == len(orders), (
            f"{name} holds {digest['tables']['sales']['rows']} sales for {len(orders)} orders"
        )
    return orders


def check_before_retries(cluster: Cluster, ledger: Ledger) -> None:
    """Stage 1: quiescence after the fault, before any client retries: orders == sales with
    no help from the clients (the reconciler recorded every sale's order), no acknowledged
    purchase lost, and a purchase refused with 503 was not done."""
    assert ledger.unexpected() == [], ledger.unexpected()[:5]
    wait_quiescent(cluster)
    orders = check_orders_match_sales(cluster, ledger)
    purchases = ledger.snapshot()
    acknowledged = sum(1 for p in purchases if p.acknowledged)
    refused = sum(1 for p in purchases if not p.acknowledged and p.final.refused)
    unknown = len(purchases) - acknowledged - refused
    assert acknowledged <= len(orders) <= acknowledged + unknown, (
        f"{len(orders)} orders for {acknowledged} acknowledged purchases, {unknown} of unknown "
        f"outcome and {refused} refused: a refused purchase was done"
    )


def resolve_unknown(cluster: Cluster, ledger: Ledger) -> int:
    """Retry every key whose last answer was not definite, with the same key, until it is
    (at most RETRY_ATTEMPTS_MAX attempts each, RETRY_DEADLINE_S in all). Returns how many."""
    keys = ledger.unresolved()
    deadline = time.monotonic() + RETRY_DEADLINE_S

    def settle(key: str) -> None:
        attempts = 0

        def definite() -> bool:
            nonlocal attempts
            attempts += 1
            return ledger.retry(cluster, key).outcome != "info" or attempts >= RETRY_ATTEMPTS_MAX

        with contextlib.suppress(TimeoutError):
            wait_until(definite, max(0.1, deadline - time.monotonic()), f"key {key} definite")

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(settle, keys))
    left = ledger.unresolved()
    assert left == [], [ledger.purchases[key].answers[-3:] for key in left[:3]]
    return len(keys)


def replay_acknowledged(cluster: Cluster, ledger: Ledger, fault_s: float) -> None:
    """Replay acknowledged keys (the last ones before the fault, and those acknowledged
    since): each answers 200 with the order id its client got, as a replay."""
    acknowledged = [p for p in ledger.snapshot() if p.acknowledged]
    before = [p for p in acknowledged if p.answers[0].complete_s < fault_s]
    before.sort(key=lambda p: p.answers[0].complete_s)
    since = [p for p in acknowledged if p.answers[0].complete_s >= fault_s]
    rng = random.Random(0)
    sample = before[-REPLAYS_MAX // 2 :] + rng.sample(since, min(len(since), REPLAYS_MAX // 2))
    for purchase in sample:
        (order_id,) = purchase.order_ids
        answer = ledger.retry(cluster, purchase.key)
        assert answer.status == 200, (purchase.key, answer)
        assert answer.order is not None
        assert (answer.order["id"], answer.replayed) == (order_id, True), (purchase.key, answer)


def check_after_retries(cluster: Cluster, ledger: Ledger) -> None:
    """Stage 2: every key has exactly one order, on every order replica, with the order id its
    client got; conservation per book on every catalog replica; digests identical per tier."""
    assert ledger.unexpected() == [], ledger.unexpected()[:5]
    purchases = ledger.snapshot()
    unsold = [(p.key, p.final) for p in purchases if p.final.status != 200]
    assert unsold == [], f"{len(unsold)} keys not sold at the end: {unsold[:3]}"
    wait_quiescent(cluster)
    orders = check_orders_match_sales(cluster, ledger)
    given = {order_id for p in purchases for order_id in p.order_ids}
    extra = [order for order in orders if order["id"] not in given]
    assert extra == [], f"{len(extra)} orders no client was given: {extra[:3]}"
    assert len(orders) == len(purchases)
    for tier in TIERS:
        digests = cluster.digests(tier)
        distinct = {json.dumps(d, sort_keys=True) for d in digests.values()}
        assert len(distinct) == 1, digests
    order_tables = next(iter(cluster.digests("order").values()))["tables"]
    catalog_tables = next(iter(cluster.digests("catalog").values()))["tables"]
    assert catalog_tables["sales"]["rows"] == order_tables["orders"]["rows"] == len(purchases)


def summary(ledger: Ledger) -> str:
    counts = Counter((a.status, a.code) for a in ledger.answers())
    return f"{len(ledger.snapshot())} keys; answers by status: {dict(counts)}"


# ---------------------------------------------------------------- 1, 2: kill -9, restarted


@pytest.mark.parametrize("name", ["catalog-1", "catalog-2", "order-1"])
def test_kill_9_under_purchase_load_loses_no_acknowledged_purchase(
    tmp_path: Path, name: str
) -> None:
    """kill -9 of the catalog primary, the catalog backup or the order primary while 8 clients
    buy; `bazar up` restarts it. No acknowledged purchase is lost or sold twice, orders ==
    sales before and after the clients' retries, and the replicas converge."""
    tier = name.split("-")[0]
    ledger = Ledger()
    with fault_cluster(tmp_path, ledger, restart=True) as cluster:
        epoch = cluster.cluster_info()[tier]["epoch"]
        pid = int(replica(cluster, name)["pid"])
        with purchase_load(cluster, ledger):
            ledger.wait_for_acks(ACKS_BEFORE_FAULT, 0.0, "before the fault")
            fault_s = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            wait_until(
                lambda: back_in_sync(cluster, name, pid),
                RECOVERY_DEADLINE_S,
                f"{name} restarted (new pid), in sync, /health 200",
            )
            recovered_s = time.monotonic()
            ledger.wait_for_acks(ACKS_AFTER_RECOVERY, recovered_s, "after the recovery")
        if replica(cluster, name)["role"] == "primary":
            assert cluster.cluster_info()[tier]["epoch"] > epoch, "a restarted primary's epoch"
        print(summary(ledger))
        check_before_retries(cluster, ledger)
        print(f"retried {resolve_unknown(cluster, ledger)} keys")
        replay_acknowledged(cluster, ledger, fault_s)
        check_after_retries(cluster, ledger)


# ---------------------------------------------------------------- 3: SIGSTOP of the backup


def test_sigstop_of_the_catalog_backup_drops_it_and_each_retried_key_sells_once(
    tmp_path: Path,
) -> None:
    """The catalog backup paused (SIGSTOP) for 2 s under load, longer than its lease, then
    continued: it is dropped from the view once its lease has expired and writes go on
    without it (every 503 arrives within WRITE_GAP_S of the pause; purchases succeed while it
    is still paused); after SIGCONT it catches up and rejoins in sync; every 503 key retried
    with the same key ends with exactly one order."""
    ledger = Ledger()
    with fault_cluster(tmp_path, ledger, restart=False) as cluster:
        pid = int(replica(cluster, "catalog-2")["pid"])
        epoch = int(cluster.cluster_info()["catalog"]["epoch"])
        with purchase_load(cluster, ledger):
            ledger.wait_for_acks(ACKS_BEFORE_FAULT, 0.0, "before the pause")
            os.kill(pid, signal.SIGSTOP)
            paused_s = time.monotonic()
            try:
                ledger.wait_for_acks(20, paused_s + WRITE_GAP_S, "while the backup is paused")
                wait_until(lambda: time.monotonic() - paused_s >= PAUSE_S, 10, "the pause")
            finally:
                os.kill(pid, signal.SIGCONT)
            wait_until(
                lambda: back_in_sync(cluster, "catalog-2", None),
                RECOVERY_DEADLINE_S,
                "catalog-2 in sync again, /health 200",
            )
            recovered_s = time.monotonic()
            ledger.wait_for_acks(ACKS_AFTER_RECOVERY, recovered_s, "after SIGCONT")
        print(summary(ledger))

        assert int(cluster.cluster_info()["catalog"]["epoch"]) >= epoch + 2  # dropped, rejoined
        late = [a for a in ledger.answers() if a.status == 503 and a.complete_s > paused_s]
        assert all(a.complete_s - paused_s <= WRITE_GAP_S for a in late), [
            round(a.complete_s - paused_s, 3) for a in late
        ]
        check_before_retries(cluster, ledger)
        resolve_unknown(cluster, ledger)
        replay_acknowledged(cluster, ledger, paused_s)
        check_after_retries(cluster, ledger)


# ---------------------------------------------------------------- 4: dead backup, no restart


@contextlib.contextmanager
def running_threads(
    threads: Sequence[threading.Thread], stop: Callable[[], None]
) -> Iterator[None]:
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop()
        for thread in threads:
            thread.join(timeout=3 * CLIENT_TIMEOUT_S)


def test_dead_catalog_backup_without_restart_is_dropped_and_rejoins_when_started(
    tmp_path: Path,
) -> None:
    """kill -9 of the catalog backup with `--no-restart`: /cluster shows it down, it is
    dropped from the view (new epoch) and the service keeps taking writes and serving reads
    without it (/health 200, purchases 200). Then it is started again by hand, catches up
    from the primary's log, rejoins in sync, and every 503 key, retried, sells exactly
    once, with identical digests."""
    ledger = Ledger()
    with fault_cluster(tmp_path, ledger, restart=False, no_cache=True) as cluster:
        pid = int(replica(cluster, "catalog-2")["pid"])
        epoch = int(cluster.cluster_info()["catalog"]["epoch"])
        os.kill(pid, signal.SIGKILL)
        killed_s = time.monotonic()
        wait_until(
            lambda: replica(cluster, "catalog-2")["state"] == "down",
            RECOVERY_DEADLINE_S,
            "catalog-2 down in /cluster",
        )
        wait_until(
            lambda: int(cluster.cluster_info()["catalog"]["epoch"]) > epoch,
            RECOVERY_DEADLINE_S,
            "a view without catalog-2",
        )
        assert time.monotonic() - killed_s <= WRITE_GAP_S, "dropped more than 2 s after the kill"
        wait_until(lambda: health(cluster) == 200, WRITE_GAP_S, "/health 200 without it")

        reads = ReadLoad(cluster, ["/info/2", "/info/3"], clients=4)
        load = PurchaseLoad(cluster, ledger, book_ids=[1], clients=4)
        with (
            running_threads(reads.threads, reads.stopped.set),
            running_threads(load.threads, load.stopped.set),
        ):
            wait_until(
                lambda: len(ledger.answers()) >= 40 and reads.count() >= 200,
                LOAD_DEADLINE_S,
                "40 purchases answered and 200 reads",
            )
        print(summary(ledger), f"{reads.reads} reads")

        answers = ledger.answers()
        assert ledger.unexpected() == [], ledger.unexpected()[:5]
        assert Counter(a.status for a in answers) == {200: len(answers)}
        assert reads.failures == [], reads.failures[:5]
        assert replica(cluster, "catalog-2")["state"] == "down"

        with served_by_hand(cluster, "catalog-2"):
            wait_until(
                lambda: back_in_sync(cluster, "catalog-2", pid),
                RECOVERY_DEADLINE_S,
                "catalog-2 started by hand, in sync, /health 200",
            )
            check_before_retries(cluster, ledger)
            resolve_unknown(cluster, ledger)
            check_after_retries(cluster, ledger)
