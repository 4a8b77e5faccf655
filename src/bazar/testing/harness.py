"""Failover under load (docs/contract.md §3.5, §8 "Faults" and "Faults and membership"): the
cluster, the nemesis and the checks behind `tests/fault/test_failover.py`; the clients are
`clients.py`.

Rules:
1. Unavailability is measured from the faults (`Nemesis.events`, on the clients' clock): after each,
   a purchase sent since is acknowledged, and that acknowledgement and every purchase answer other
   than 200 arrive within `WRITE_WINDOW_S` of the last event before them (docs/contract.md §3.5:
   writes resume within 2 s of each fault; docs/contract.md §8: the whole window of 503s is at most
   2 s, for a primary or a backup). A stall without 503s counts, as it should. That is the only
   latency asserted; every other wait is a `wait_until` on an observable condition, with a deadline
   far above what it waits for.
2. Zero failed reads (docs/contract.md §8: a dead or paused replica costs a read at most one
   inter-service timeout, never a failure).
3. At the end only live replicas (not listed `down`) are compared: a dead replica is out of the
   view and keeps what it had. Their digests (`/internal/digest`: every replicated table and the
   log position) must be equal per tier, so the orders read through the front end are the
   orders of every live order replica, and the stocks are read on every live catalog replica.
4. Linearizability is judged on the clients' history (a `buy` per key, a read per book read),
   never on server logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bazar.testing import checker
from bazar.testing.clients import Ledger, Load, resolve, running_load
from bazar.testing.cluster import Cluster, running, wait_until
from bazar.testing.workload import write_catalog

STOCKS = {1: 1_000_000, 2: 1_000_000, 3: 1_000_000}  # ample: every purchase can succeed
TOPIC = "Failover"
TIERS = ("catalog", "order")
WRITE_WINDOW_S = 2.0  # docs/contract.md §8: every 503 of a purchase arrives within 2 s of the fault
START_DEADLINE_S = 20.0
RESUME_DEADLINE_S = 10.0  # generous: the guarantee (2 s) is asserted on the answers instead
VIEW_DEADLINE_S = 5.0
QUIESCENCE_DEADLINE_S = 10.0
ORDERS_PAGE = 1000
ORDERS_PAGES_MAX = 100
REPORTED_MAX = 5


# ---------------------------------------------------------------- the cluster and the nemesis


@contextlib.contextmanager
def failover_cluster(
    directory: Path,
    ledger: Ledger,
    *,
    catalog_replicas: int = 2,
    test_hooks: bool = False,
    log_entries_max: int | None = None,
    min_in_sync: int | None = None,
) -> Iterator[Cluster]:
    """A fresh cluster with `--no-restart` whose catalog is STOCKS, every replica in sync;
    on failure its logs are printed (pytest shows them); the history is kept in
    `directory/history.jsonl`."""
    directory.mkdir(parents=True, exist_ok=True)
    catalog = write_catalog(directory / "catalog.json", STOCKS, TOPIC)
    options: dict[str, Any] = {
        "catalog_file": catalog,
        "catalog_replicas": catalog_replicas,
        "test_hooks": test_hooks,
        "log_entries_max": log_entries_max,
        "min_in_sync": min_in_sync,
    }
    with (
        running(directory / "cluster", restart=False, **options) as cluster,
        recorded(cluster, directory, ledger),
    ):
        yield cluster


@contextlib.contextmanager
def recorded(cluster: Cluster, directory: Path, ledger: Ledger) -> Iterator[None]:
    """Every replica of a started cluster in sync first; on failure its logs are printed
    (pytest shows them); the history is kept in `directory/history.jsonl`."""
    try:
        wait_until(lambda: all_in_sync(cluster), START_DEADLINE_S, "every replica in sync")
        yield
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        with ledger.lock:
            ledger.history.dump_jsonl(directory / "history.jsonl")


def failover_load(cluster: Cluster, ledger: Ledger) -> contextlib.AbstractContextManager[Load]:
    """The clients' load (`clients.py`) on the books of `failover_cluster`."""
    return running_load(cluster, ledger, tuple(STOCKS), TOPIC)


def all_in_sync(cluster: Cluster) -> bool:
    info = cluster.cluster_info()
    return all(r["state"] == "in_sync" for tier in TIERS for r in info[tier]["replicas"])


def replica(cluster: Cluster, name: str) -> dict[str, Any]:
    """Replica `name`'s entry in `/cluster` (name, url, role, state, pid, positions)."""
    tier = name.split("-")[0]
    entry: dict[str, Any] = next(
        r for r in cluster.cluster_info()[tier]["replicas"] if r["name"] == name
    )
    return entry


def replica_in_role(cluster: Cluster, tier: str, role: str) -> str:
    """The name of the tier's primary, or of an in-sync backup."""
    info = cluster.cluster_info()[tier]
    if role == "primary":
        return str(info["primary"])
    return str(
        next(r["name"] for r in info["replicas"] if (r["role"], r["state"]) == (role, "in_sync"))
    )


@dataclass(frozen=True, slots=True)
class Event:
    """A fault (or a replica's return), on the clients' monotonic clock."""

    what: str
    at_s: float


class Nemesis:
    """Kills and pauses replicas by their pid from `/cluster`; records when."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.events: list[Event] = []

    def mark(self, what: str) -> Event:
        event = Event(what, time.monotonic())
        self.events.append(event)
        return event

    def kill(self, name: str) -> Event:
        pid = int(replica(self.cluster, name)["pid"])
        event = self.mark(f"kill -9 {name}")
        os.kill(pid, signal.SIGKILL)
        return event

    @contextlib.contextmanager
    def paused(self, name: str) -> Iterator[Event]:
        """SIGSTOP for the block, SIGCONT at its end whatever happens."""
        pid = int(replica(self.cluster, name)["pid"])
        event = self.mark(f"SIGSTOP {name}")
        os.kill(pid, signal.SIGSTOP)
        try:
            yield event
        finally:
            self.mark(f"SIGCONT {name}")
            os.kill(pid, signal.SIGCONT)


# ---------------------------------------------------------------- waiting for the view


def expect(
    predicate: Callable[[], bool], deadline_s: float, what: str, seen: Callable[[], str]
) -> None:
    """`wait_until`, failing as an AssertionError that says what was seen last."""
    try:
        wait_until(predicate, deadline_s, what)
    except TimeoutError as error:
        raise AssertionError(f"{error}; last seen: {seen()}") from None


def wait_writes_resume(
    ledger: Ledger, event: Event, deadline_s: float = RESUME_DEADLINE_S
) -> float:
    """Wait until a purchase invoked after `event` is acknowledged; returns when its answer
    arrived, relative to the event. Raises AssertionError (with the answers since) if not."""

    def since() -> str:
        attempts = [a for a in ledger.attempts() if a.invoke_s >= event.at_s]
        statuses = Counter((a.status, a.code) for a in attempts)
        unanswered = [sent_s - event.at_s for sent_s in ledger.unanswered()]
        oldest = f", the oldest sent at {min(unanswered):+.3f} s" if unanswered else ""
        return (
            f"{len(attempts)} purchase attempts since, by status: {dict(statuses)}; "
            + describe_windows(windows(ledger, [event]))
            + f"; {len(unanswered)} attempts unanswered{oldest}"
        )

    expect(
        lambda: ledger.acks_invoked_after(event.at_s) > 0,
        deadline_s,
        f"writes resumed after {event.what} (a purchase sent since acknowledged)",
        since,
    )
    return min(
        a.complete_s - event.at_s
        for a in ledger.attempts()
        if a.status == 200 and a.invoke_s >= event.at_s
    )


def wait_dropped(cluster: Cluster, name: str, epoch: int, *, primary: bool) -> dict[str, Any]:
    """Wait until `/cluster` lists `name` down in an epoch above `epoch` and, if it was the
    primary, another in-sync replica as primary; returns the tier's entry."""
    tier = name.split("-")[0]
    seen: dict[str, Any] = {}

    def dropped() -> bool:
        seen.update(cluster.cluster_info()[tier])
        roles = {r["name"]: (r["role"], r["state"]) for r in seen["replicas"]}
        if roles[name][1] != "down" or seen["epoch"] <= epoch:
            return False
        return not primary or (
            seen["primary"] != name and roles.get(seen["primary"]) == ("primary", "in_sync")
        )

    what = f"{name} listed down, {tier} epoch above {epoch}"
    what += f", another {tier} replica primary" if primary else ""
    expect(dropped, VIEW_DEADLINE_S, what, lambda: json.dumps(seen))
    return seen


def listed(
    cluster: Cluster,
    name: str,
    states: Sequence[str],
    *,
    epoch_above: int = 0,
    pid_other_than: int | None = None,
) -> bool:
    """`/cluster` lists `name` in one of `states`, in an epoch above `epoch_above`, with a pid
    other than `pid_other_than` (a new process)."""
    info = cluster.cluster_info()[name.split("-")[0]]
    entry = next(r for r in info["replicas"] if r["name"] == name)
    return (
        entry["state"] in states
        and info["epoch"] > epoch_above
        and (pid_other_than is None or entry["pid"] != pid_other_than)
    )


def backups_in_sync(cluster: Cluster, tier: str) -> bool:
    """Every live replica of `tier` in sync (a new primary has a backup to promote next)."""
    live = [r for r in cluster.cluster_info()[tier]["replicas"] if r["state"] != "down"]
    return all(r["state"] == "in_sync" for r in live)


# ---------------------------------------------------------------- the checks during the load


def check_reads(ledger: Ledger, events: Sequence[Event]) -> None:
    """(a) Zero failed reads."""
    with ledger.lock:
        failures, reads = list(ledger.read_failures), ledger.reads
    origin = events[0]
    shown = [(f"{at_s - origin.at_s:+.3f} s", *rest) for at_s, *rest in failures[:REPORTED_MAX]]
    assert failures == [], (
        f"{len(failures)} of {reads} reads failed (times after {origin.what}): {shown}"
    )


@dataclass(frozen=True, slots=True)
class Window:
    """What the buyers saw after one event, in seconds after it: the arrival of every purchase
    answer other than 200 until the next event, and of the first acknowledgement of a purchase
    sent after it (None: none yet)."""

    event: Event
    unavailable_s: tuple[float, ...]
    first_ack_s: float | None

    @property
    def length_s(self) -> float:
        """Until writes had resumed and the last answer other than 200 had arrived."""
        ends = [*self.unavailable_s, self.first_ack_s if self.first_ack_s is not None else 0.0]
        return max(ends)

    def describe(self) -> str:
        line = f"{self.event.what}: {len(self.unavailable_s)} answers other than 200"
        if self.unavailable_s:
            line += f" from {min(self.unavailable_s):+.3f} s to {max(self.unavailable_s):+.3f} s"
        if self.first_ack_s is not None:
            line += f", first acknowledgement of a purchase sent since at +{self.first_ack_s:.3f} s"
        return line


def windows(ledger: Ledger, events: Sequence[Event]) -> list[Window]:
    """A window per event; answers other than 200 that arrived before the first event come
    under a pseudo-event "before any fault" (at the first event: negative times)."""
    attempts = ledger.attempts()
    found = [Window(Event("before any fault", events[0].at_s), (), None)]
    for event in events:
        acks = [
            a.complete_s - event.at_s
            for a in attempts
            if a.status == 200 and a.invoke_s >= event.at_s
        ]
        found.append(Window(event, (), min(acks) if acks else None))
    for attempt in attempts:
        if attempt.status == 200:
            continue
        index = sum(1 for e in events if e.at_s <= attempt.complete_s)  # 0: before any fault
        window = found[index]
        times = (*window.unavailable_s, attempt.complete_s - window.event.at_s)
        found[index] = Window(window.event, times, window.first_ack_s)
    return found


def describe_windows(found: Sequence[Window]) -> str:
    return "; ".join(window.describe() for window in found)


def check_windows(ledger: Ledger, events: Sequence[Event]) -> None:
    """(b) Every purchase answer other than 200 is an expected one (503 `unavailable` with
    Retry-After, `idempotency_key_in_use`, or none); after each event a purchase sent since is
    acknowledged, and that and every answer other than 200 arrive within WRITE_WINDOW_S of the
    event (none before the first)."""
    origin_s = events[0].at_s
    unexpected = [(p.key, a) for p in ledger.snapshot() for a in p.attempts if not a.expected]
    assert unexpected == [], "unexpected purchase answers: " + "; ".join(
        f"{key}: {a.describe(origin_s)}" for key, a in unexpected[:REPORTED_MAX]
    )
    found = windows(ledger, events)
    before, after = found[0], found[1:]
    late = [w for w in after if w.first_ack_s is None or w.length_s > WRITE_WINDOW_S]
    late = [before, *late] if before.unavailable_s else late
    assert late == [], (
        f"writes unavailable more than {WRITE_WINDOW_S} s after "
        + ", ".join(window.event.what for window in late)
        + ": "
        + describe_windows(found)
    )


def check_load(ledger: Ledger, events: Sequence[Event]) -> None:
    """(a) and (b), once the load has stopped: no read failed, and every purchase answer other
    than 200 is an expected one inside a window (printed either way, for the record)."""
    print(describe_windows(windows(ledger, events)))
    check_reads(ledger, events)
    check_windows(ledger, events)


# ---------------------------------------------------------------- the checks after the load


def live_digests(cluster: Cluster, tier: str) -> dict[str, Any] | None:
    """The digest of every replica of `tier` not listed down; None while one is not in sync
    or does not answer."""
    found: dict[str, Any] = {}
    for entry in cluster.cluster_info()[tier]["replicas"]:
        if entry["state"] == "down":
            continue
        status, body = cluster.internal("GET", entry["url"], "/internal/digest")
        if entry["state"] != "in_sync" or status != 200:
            return None
        found[entry["name"]] = body
    return found


def quiescent(cluster: Cluster, seen: dict[str, Any]) -> bool:
    """Every live replica in sync, each tier's live digests equal, and every sale has its
    order (with ample stock every sale record is a completed sale)."""
    seen.clear()
    for tier in TIERS:
        digests = seen[tier] = live_digests(cluster, tier)
        if digests is None or len({json.dumps(d, sort_keys=True) for d in digests.values()}) != 1:
            return False
    sales = next(iter(seen["catalog"].values()))["tables"]["sales"]["rows"]
    return bool(sales == next(iter(seen["order"].values()))["tables"]["orders"]["rows"])


def front_end_orders(cluster: Cluster) -> list[dict[str, Any]]:
    """Every order, oldest first, paging through the front end's `/orders`."""
    orders: list[dict[str, Any]] = []
    after = ""
    for _ in range(ORDERS_PAGES_MAX):
        status, body = cluster.json("GET", f"/orders?limit={ORDERS_PAGE}{after}")
        assert status == 200, (status, body)
        orders += body["data"]
        if body["next"] is None:
            return orders
        after = f"&after={body['next']}"
    raise AssertionError(f"more than {ORDERS_PAGES_MAX} pages of orders")


def live_stocks(cluster: Cluster) -> dict[str, dict[int, int]]:
    """Every book's stock on every catalog replica not listed down (its committed state)."""
    found = {}
    for entry in cluster.cluster_info()["catalog"]["replicas"]:
        if entry["state"] == "down":
            continue
        status, body = cluster.internal("GET", entry["url"], "/books")
        assert status == 200, (entry["name"], status, body)
        found[entry["name"]] = {int(book["id"]): int(book["stock"]) for book in body["data"]}
    return found


def check_orders_match_sales(cluster: Cluster, ledger: Ledger) -> None:
    """(d) Every key has exactly one order, the one its client was given, with its book and
    quantity, and no other order exists; on every live catalog replica initial stock - stock
    == the quantities ordered, per book, and the catalog holds one sale per order."""
    purchases = ledger.snapshot()
    orders = front_end_orders(cluster)
    by_id = {order["id"]: order for order in orders}
    assert len(by_id) == len(orders), "two orders with one id"
    wrong = []
    for purchase in purchases:
        ids = purchase.order_ids
        order = by_id.get(next(iter(ids))) if len(ids) == 1 else None
        if order is None or (order["book_id"], order["quantity"]) != (
            purchase.book_id,
            purchase.quantity,
        ):
            wrong.append((purchase.key, sorted(ids), order))
    assert wrong == [], f"{len(wrong)} keys without exactly their one order: {wrong[:3]}"
    given = {order_id for p in purchases for order_id in p.order_ids}
    extra = [order for order in orders if order["id"] not in given]
    assert extra == [], f"{len(extra)} orders no client was given: {extra[:3]}"
    ordered: Counter[int] = Counter()
    for order in orders:
        ordered[int(order["book_id"])] += int(order["quantity"])
    for name, stocks in live_stocks(cluster).items():
        for book_id, initial in STOCKS.items():
            assert initial - stocks[book_id] == ordered[book_id], (
                f"{name}, book {book_id}: sold {initial - stocks[book_id]}, "
                f"ordered {ordered[book_id]}"
            )
    digests = live_digests(cluster, "catalog")
    assert digests is not None, "a live catalog replica stopped answering"
    for name, digest in digests.items():
        sales = digest["tables"]["sales"]["rows"]
        assert sales == len(orders), f"{name} holds {sales} sales for {len(orders)} orders"


def check_linearizable(ledger: Ledger) -> None:
    """(d) The history (a `buy` per key, a read per book read) is linearizable per book."""
    with ledger.lock:
        operations = ledger.history.operations
    verdict = checker.check(operations, STOCKS)
    assert verdict.linearizable, "\n\n".join(
        f"book {book_id}'s stock is not linearizable (last 40 operations):\n"
        + "\n".join(checker.describe(operations, book_id).splitlines()[-40:])
        for book_id in verdict.books_failed
    )


def check_after_load(cluster: Cluster, ledger: Ledger) -> str:
    """(d), once the load has stopped: retry the keys left indefinite, wait for quiescence,
    then orders == sales against the clients' record, linearizability, and equal digests of
    the live replicas of each tier. Returns a one-line summary."""
    retried = resolve(cluster, ledger)
    seen: dict[str, Any] = {}
    expect(
        lambda: quiescent(cluster, seen),
        QUIESCENCE_DEADLINE_S,
        "every live replica in sync, each tier's digests equal, no purchase pending",
        lambda: json.dumps(seen),
    )
    check_orders_match_sales(cluster, ledger)
    check_linearizable(ledger)
    for tier in TIERS:
        digests = live_digests(cluster, tier)
        assert digests is not None, f"a live {tier} replica stopped answering"
        distinct = {json.dumps(d, sort_keys=True) for d in digests.values()}
        assert len(distinct) == 1, f"live {tier} replicas differ: {digests}"
    purchases = ledger.snapshot()
    retried_keys = sum(1 for p in purchases if len(p.attempts) > 1)
    return (
        f"{len(purchases)} keys ({retried_keys} retried, {retried} after the load), "
        f"{ledger.reads} reads, {len(ledger.history)} operations checked"
    )
