"""What the simulator checks, during a run and at its end, and the trace it keeps.

Why checks during the run: a broken invariant is cheapest to understand at the step that
breaks it, so every commit, read and persist is checked as it happens (TigerBeetle's state
checker); the history is judged once, at the end.

During the run (`Checks`, the replicas' observer):
1. Committed prefixes agree: an entry committed at seq s, anywhere, equals `canonical[s]`.
2. One primary acts per epoch: every commit of epoch e (CommitBatch, or a promotion) that
   reaches a disk is by one process (replica and incarnation); and no commit is decided in
   an epoch older than a commit already decided (a deposed primary never commits after its
   successor; its write may land later, as a writer thread's does, and then carries an entry
   every backup of its view had already staged).
3. Leases (core rule 6): when the front end installs a view that leaves a replica out,
   that replica no longer serves (its lease has expired); and no replica serves a read in
   an older view after the installed one left it out.
4. A commit is durable on every backup of the primary's view (the entry is in its log).
5. A replica's durable epoch and commit_seq never decrease, across restarts too; it sends
   no Append in an epoch its store has not recorded (`SaveEpoch` before acting).
6. Per replica, on every apply (`SimStore`): a key is applied at most once, stock >= 0,
   and stock == initial - sold + restocked.

At the end (`check_end`), after the liveness phase: every client operation completed; every
acknowledged key is on every replica with the result its client got; every committed log
equals the canonical one; every value a read returned was committed (the row at its
version is `canonical`'s); and the history is linearizable per book (`checker.py`), once
each `info` write is resolved by the converged state (`resolve`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bazar.testing import checker
from bazar.testing.history import History, Operation
from bazar.testing.sim_network import Loop
from bazar.testing.sim_replica import ReplicaNode
from bazar.testing.sim_store import Buy, Command, Outcome, Restock, SimStore
from bazar.wire import CommitPoint, Entry, Upsert, Version, View

TRACE_TAIL_LINES = 400


class Violation(Exception):
    """A broken invariant: the run fails with this message."""


class Trace:
    """Transition lines (`ready.transitions`, faults, views, client results): hashed for
    replay checks, the last few kept for the failure report, optionally echoed."""

    def __init__(self, loop: Loop, echo: Callable[[str], None] | None = None) -> None:
        self.loop = loop
        self.echo = echo
        self.digest = hashlib.sha256()
        self.tail: deque[str] = deque(maxlen=TRACE_TAIL_LINES)
        self.kinds: Counter[str] = Counter()

    def line(self, node: str, text: str) -> None:
        line = f"{self.loop.now_ms:>8} {node:<9} {text}"
        self.digest.update(line.encode())
        self.tail.append(line)
        if text.startswith("transition="):
            self.kinds[text.split()[0].removeprefix("transition=")] += 1
        if self.echo is not None:
            self.echo(line)

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


@dataclass(frozen=True, slots=True)
class SeenRead:
    book_id: int
    stock: int
    version: Version


@dataclass(slots=True)
class Checks:
    """The incremental checks (`sim_replica.Observer`)."""

    replicas: dict[str, ReplicaNode] = field(default_factory=dict)
    canonical: dict[str, dict[int, Entry]] = field(default_factory=dict)  # per tier
    committers: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    newest_epoch: dict[str, int] = field(default_factory=dict)  # per tier: the newest epoch
    # in which a primary committed
    durable: dict[str, tuple[int, int]] = field(default_factory=dict)
    reads: list[SeenRead] = field(default_factory=list)
    acked: dict[str, tuple[Command, Outcome]] = field(default_factory=dict)
    commands: dict[int, Command] = field(default_factory=dict)  # history index -> write
    installed: dict[str, View] = field(default_factory=dict)

    def committed(self, node: str, entries: Sequence[Entry]) -> None:
        canonical = self.canonical.setdefault(self.replicas[node].tier, {})
        for entry in entries:
            known = canonical.setdefault(entry.seq, entry)
            if known != entry:
                raise Violation(
                    f"{node} committed {describe(entry)} but seq {entry.seq} was committed "
                    f"as {describe(known)}"
                )

    def primary_landed(self, node: ReplicaNode, epoch: int) -> None:
        """A primary's commit reached its disk: one process commits per epoch (a decision
        that a crash took before it landed, sent and answered nothing, and does not count)."""
        process = (node.name, node.host.incarnation)
        first = self.committers.setdefault((node.tier, epoch), process)
        if first != process:
            raise Violation(f"two processes commit in epoch {epoch}: {first} and {process}")

    def primary_decided(self, node: ReplicaNode, entry: Entry, epoch: int) -> None:
        """A primary decides to commit (under its lease, every backup having staged the
        entry), whenever its write lands: never in an epoch older than a commit already
        decided, and the entry is durable on every backup of its view."""
        core = node.live_core()
        assert epoch == core.epoch
        newest = self.newest_epoch.get(node.tier, 0)
        if epoch < newest:
            raise Violation(
                f"{node.name} commits seq {entry.seq} in epoch {epoch} after a primary "
                f"committed in epoch {newest}"
            )
        self.newest_epoch[node.tier] = epoch
        view = core.view
        assert view is not None
        for backup in view.backups:
            logged = self.replicas[backup].store.log.get(entry.seq)
            if logged != entry:
                raise Violation(
                    f"{node.name} commits {describe(entry)} but backup {backup} has "
                    f"{describe(logged) if logged else 'nothing'} at that seq"
                )

    def commit_point_answered(self, node: ReplicaNode, point: CommitPoint) -> None:
        """A primary tells a backup its commit point (CRAQ): never below an entry it holds
        that a primary has already committed (readers may have seen it; the backup would
        answer with the value from before it)."""
        core = node.live_core()
        canonical = self.canonical.get(node.tier, {})
        for seq, entry in sorted(core.staged.items()):
            if seq > point.commit_seq and canonical.get(seq) == entry:
                raise Violation(
                    f"{node.name} answers commit point {point.commit_seq} to a backup, below "
                    f"{describe(entry)}, which it holds and a primary committed"
                )

    def served(self, node: ReplicaNode) -> None:
        """A read is served only by a member of the installed view, or in that view."""
        view = node.live_core().view
        if view is None:
            return  # (before its first view: what it serves is judged by the history)
        installed = self.installed.get(view.tier)
        if installed is None or view.epoch >= installed.epoch:
            return
        if node.name != installed.primary and node.name not in installed.backups:
            raise Violation(
                f"{node.name} serves a read in epoch {view.epoch} after epoch "
                f"{installed.epoch} left it out"
            )

    def view_installed(self, old: View, new: View) -> None:
        """Core rule 6: the front end leaves a replica out of a view only once its lease
        has expired, so a deposed primary (or a dropped backup) no longer serves."""
        self.installed[new.tier] = new
        kept = {new.primary, *new.backups}
        for name in (old.primary, *old.backups):
            node = self.replicas[name]
            core = node.core
            if name in kept or core is None or not core.serving(node.now()):
                continue
            raise Violation(
                f"lease overlap: epoch {new.epoch} leaves {name} out while it still serves "
                f"in epoch {core.epoch} (lease until {core.lease_until_ms}, its clock "
                f"{node.now()})"
            )

    def persisted(self, node: ReplicaNode) -> None:
        store = node.store
        before = self.durable.get(node.name, (0, 0))
        # An OS crash may lose the commits made without an fsync (their entries come back
        # staged from the intent log); nothing at or below the last sync is ever lost.
        now = (store.epoch, store.synced_commit_seq)
        if now[0] < before[0] or now[1] < before[1]:
            raise Violation(f"{node.name} durable (epoch, commit_seq) went from {before} to {now}")
        self.durable[node.name] = now

    def sending(self, node: ReplicaNode, epoch: int) -> None:
        if epoch > node.store.epoch:
            raise Violation(
                f"{node.name} acts as primary of epoch {epoch} while its store records "
                f"epoch {node.store.epoch} (SaveEpoch before acting)"
            )


def describe(entry: Entry) -> str:
    return f"(epoch {entry.epoch}, seq {entry.seq}, {len(entry.changes)} changes)"


# ---------------------------------------------------------------- end of run


def check_end(
    checks: Checks,
    history: History,
    initial: Mapping[int, int],
    stores: Mapping[str, SimStore],
    end_s: float,
) -> None:
    """Raises: Violation."""
    open_ops = [op for op in history.operations if op.open]
    if open_ops:
        raise Violation(f"liveness: {len(open_ops)} client operations never completed")
    catalogs = {n: store for n, store in stores.items() if checks.replicas[n].tier == "catalog"}
    orders = {n: store for n, store in stores.items() if checks.replicas[n].tier == "order"}
    for name, store in sorted(stores.items()):
        canonical = checks.canonical.get(checks.replicas[name].tier, {})
        for seq, entry in sorted(store.log.items()):  # what pruning left of the log
            if seq <= store.commit_seq and entry != canonical.get(seq):
                raise Violation(f"{name}: committed seq {seq} differs from the canonical log")
        store.check_all()
    for name, store in sorted(catalogs.items()):
        _check_catalog(checks, name, store)
    final = next(iter(catalogs.values()))
    for name, store in sorted(orders.items()):
        _check_orders(checks, name, store, final)
    _check_reads(checks, initial)
    operations = [resolve(op, checks.commands, final, end_s) for op in history.operations]
    verdict = checker.check(operations, initial)
    if not verdict.linearizable:
        book = verdict.books_failed[0]
        raise Violation(
            f"not linearizable: books {verdict.books_failed}; book {book}:\n"
            + checker.describe(operations, book)
        )


def resolve(
    operation: Operation, commands: Mapping[int, Command], final: SimStore, end_s: float
) -> Operation:
    """An `info` write judged by the converged state (Jepsen's final read): a key that no
    replica holds never took effect, so it is dropped (a failure that changed nothing); a
    key that is held took effect before the end, with the result it stored."""
    if operation.outcome != "info" or operation.kind == "read":
        return operation
    command = commands[operation.index]
    table = "purchases" if isinstance(command, Buy) else "restocks"
    row = final.rows[table].get(command.key)
    if row is None:
        return dataclasses.replace(operation, outcome="fail", result="never_applied")
    if row["status"] != "ok":
        return dataclasses.replace(
            operation, complete_s=end_s, outcome="fail", result="out_of_stock"
        )
    result = row["stock"] if isinstance(command, Restock) else command.key
    return dataclasses.replace(operation, complete_s=end_s, outcome="ok", result=result)


def _check_catalog(checks: Checks, name: str, store: SimStore) -> None:
    for key, (command, outcome) in sorted(checks.acked.items()):
        table = "purchases" if isinstance(command, Buy) else "restocks"
        row = store.rows[table].get(key)
        if row is None:
            raise Violation(f"acknowledged {command} ({outcome.status}) is missing on {name}")
        if row["status"] != outcome.status or (
            table == "restocks" and row["stock"] != outcome.stock
        ):
            raise Violation(f"{name} holds {row} for {command}, whose client got {outcome}")


def _check_orders(checks: Checks, name: str, store: SimStore, catalog: SimStore) -> None:
    """Orders == sales: every sale the catalog made has exactly one order (the store keeps
    one per key), with its book and quantity, and no order exists without its sale."""
    sales = {key: row for key, row in catalog.rows["purchases"].items() if row["status"] == "ok"}
    orders = store.rows["orders"]
    for key, sale in sorted(sales.items(), key=lambda item: str(item[0])):
        order = orders.get(key)
        if order is None:
            raise Violation(f"{name}: the sale {sale} has no order")
        if (order["book_id"], order["quantity"]) != (sale["book_id"], sale["quantity"]):
            raise Violation(f"{name}: the order {order} differs from its sale {sale}")
    extra = sorted(str(key) for key in set(orders) - set(sales))
    if extra:
        raise Violation(f"{name}: orders without a sale: {extra}")
    for key, (command, outcome) in sorted(checks.acked.items()):
        if isinstance(command, Buy) and outcome.status == "ok" and key not in orders:
            raise Violation(f"{name}: the acknowledged purchase {command} has no order")


def _check_reads(checks: Checks, initial: Mapping[int, int]) -> None:
    for read in checks.reads:
        epoch, seq = read.version
        if seq == 0:
            if read.stock != initial[read.book_id]:
                raise Violation(f"a read returned {read}, never the initial stock")
            continue
        entry = checks.canonical.get("catalog", {}).get(seq)
        images = (
            []
            if entry is None or entry.epoch != epoch
            else [
                change.row["stock"]
                for change in entry.changes
                if isinstance(change, Upsert)
                and change.table == "books"
                and change.row["id"] == read.book_id
            ]
        )
        if read.stock not in images:
            raise Violation(f"a read returned {read}, which was never committed")
