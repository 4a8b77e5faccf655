"""Every message on the wire, as frozen msgspec Structs: the public API, the internal
replica routes, replication and views. Handlers receive decoded Structs, never dicts.

Money is integer cents inside the system and a JSON number (`12.5`) at the public edge.
A *version* is `(epoch, seq)`: the log position of the last write a response reflects.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

Version = tuple[int, int]
Scalar = int | str | None
Row = dict[str, Scalar]
Role = Literal["primary", "backup", "none"]


class Struct(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every wire message."""


# ---------------------------------------------------------------- public API


class Book(Struct, frozen=True):
    id: int
    title: str
    topic: str
    stock: int
    cost: float


class Order(Struct, frozen=True):
    id: str
    book_id: int
    quantity: int
    unit_cost: float
    total_cost: float
    status: Literal["completed"]
    created_at: str


class ErrorDetail(Struct, frozen=True):
    code: str
    message: str


class ErrorBody(Struct, frozen=True):
    error: ErrorDetail


class PurchaseBody(Struct, frozen=True):
    """Optional purchase body: `item_number` (the seed's name) or `quantity`, not both."""

    item_number: int | UnsetType = UNSET
    quantity: int | UnsetType = UNSET


class BookPatch(Struct, frozen=True):
    """Admin update: a new cost and/or a stock change (restock or reduce)."""

    cost: int | float | UnsetType = UNSET
    stock_delta: int | UnsetType = UNSET


class BookData(Struct, frozen=True):
    data: Book


class BookListData(Struct, frozen=True):
    data: list[Book]


class PurchaseData(Struct, frozen=True):
    data: str
    order: Order


class OrderData(Struct, frozen=True):
    data: Order


class OrderPage(Struct, frozen=True):
    data: list[Order]
    next: str | None


class HealthStatus(Struct, frozen=True):
    status: str


class HealthData(Struct, frozen=True):
    data: HealthStatus


class ReplicaInfo(Struct, frozen=True):
    name: str
    url: str
    role: Literal["primary", "backup"]
    state: Literal["in_sync", "catching_up", "down"]
    pid: int | None
    last_seq: int | None
    commit_seq: int | None


class TierInfo(Struct, frozen=True):
    epoch: int
    primary: str
    replicas: list[ReplicaInfo]


class CacheInfo(Struct, frozen=True):
    enabled: bool
    entries: int
    hits: int
    misses: int
    invalidations: int
    rejected_fills: int


class TierData(Struct, frozen=True):
    data: TierInfo


class ReplicaData(Struct, frozen=True):
    data: ReplicaInfo


class ReplicaAdd(Struct, frozen=True):
    """Admin: add a replica to a service; `url` registers one started elsewhere."""

    service: Literal["catalog", "order"]
    url: str | None = None


class Switchover(Struct, frozen=True):
    """Admin: move a service's primary role, to `to` or the best in-sync backup."""

    service: Literal["catalog", "order"]
    to: str | None = None


class ClusterInfo(Struct, frozen=True):
    catalog: TierInfo
    order: TierInfo
    cache: CacheInfo


class ClusterData(Struct, frozen=True):
    data: ClusterInfo


# ---------------------------------------------------------------- supervisor control (--demo)

ProcessAction = Literal["kill", "pause", "resume", "restart"]
ProcessRun = Literal["running", "paused", "stopped"]


class ProcessState(Struct, frozen=True):
    """A process `bazar up` runs, as its supervisor sees it (teaching console)."""

    name: str
    tier: Literal["catalog", "order"]
    pid: int | None
    process: ProcessRun


class ProcessData(Struct, frozen=True):
    data: ProcessState


class ProcessListData(Struct, frozen=True):
    data: list[ProcessState]


class ControlRequest(Struct, frozen=True):
    """The front end asks the supervisor to act on one of its replicas, or (`action` None)
    for the state of all of them."""

    action: ProcessAction | None = None
    name: str = ""


class ControlReply(Struct, frozen=True):
    """The supervisor's answer: the processes concerned, or why it refused."""

    processes: list[ProcessState] = msgspec.field(default_factory=list)
    error: ErrorDetail | None = None


# ---------------------------------------------------------------- internal reads


class VersionedBook(Struct, frozen=True):
    data: Book
    version: Version


class VersionedBookList(Struct, frozen=True):
    data: list[Book]
    version: Version


class Invalidate(Struct, frozen=True):
    """Catalog primary -> front end, before a write is acknowledged: these books changed."""

    books: tuple[int, ...]
    version: Version


class InvalidateReply(Struct, frozen=True):
    dropped: int


class ReadDelay(Struct, frozen=True):
    """Test hook (only with `--test-hooks`): delay the next `count` reads of a book."""

    book_id: int
    delay_ms: int
    count: int = 1


class ReadDelayState(Struct, frozen=True):
    waiting: int


class Isolation(Struct, frozen=True):
    """Test hook (only with `--test-hooks`): cut this replica off from the front end (every
    lease request and invalidation fails as if the network dropped it), or heal it."""

    frontend: bool


# ---------------------------------------------------------------- replication


class Upsert(Struct, frozen=True, tag="upsert"):
    table: str
    row: Row


class Delete(Struct, frozen=True, tag="delete"):
    table: str
    key: int | str


Change = Upsert | Delete


class Entry(Struct, frozen=True):
    """One replicated log entry: the effects of a batch of commands, as row images."""

    epoch: int
    seq: int
    changes: list[Change]


class Append(Struct, frozen=True):
    """Primary -> backup: entries following `(prev_epoch, prev_seq)`, and the commit point."""

    epoch: int
    primary: str
    prev_seq: int
    prev_epoch: int
    entries: list[Entry]
    commit_seq: int


class Snapshot(Struct, frozen=True):
    """Primary -> a replica that needs entries the primary has pruned: its committed
    database (SQLite backup API) as of `(commit_epoch, commit_seq)`, the body of
    `POST /internal/snapshot`; this header travels as JSON in `X-Bazar-Snapshot`."""

    epoch: int
    primary: str
    commit_seq: int
    commit_epoch: int


class AppendReply(Struct, frozen=True):
    status: Literal["ok", "gap", "stale_epoch"]
    epoch: int
    last_seq: int
    commit_seq: int


class CommitPoint(Struct, frozen=True):
    epoch: int
    commit_seq: int


class Member(Struct, frozen=True):
    name: str
    url: str


class View(Struct, frozen=True):
    """A numbered configuration of one tier: who is primary, which backups are in sync."""

    tier: Literal["catalog", "order"]
    epoch: int
    primary: str
    backups: tuple[str, ...]
    members: tuple[Member, ...]

    def url_of(self, name: str) -> str:
        for member in self.members:
            if member.name == name:
                return member.url
        raise KeyError(name)


class TableDigest(Struct, frozen=True):
    rows: int
    sha256: str


class Digest(Struct, frozen=True):
    """A replica's content at a glance: equal digests mean identical replicated tables."""

    last_seq: int
    commit_seq: int
    tables: dict[str, TableDigest]


class ReplicaStatus(Struct, frozen=True):
    name: str
    tier: str
    pid: int
    incarnation: str
    epoch: int
    boot_epoch: int
    role: Role
    last_seq: int
    last_epoch: int
    commit_seq: int
    promoting: bool = False
    invalidating: Invalidate | None = None
    """A catalog primary's write between its invalidation and its COMMIT: a front end that
    restarted meanwhile learns it here, before it fills its cache."""


class ReplicaHealth(Struct, frozen=True):
    """A replica's own answer to `/health`, `/primary` and `/replica` (Patroni's checks).
    `serving`: it may serve now (a role in the view it knows, a lease, no promotion under
    way); whether it is *in sync* is the view manager's word (`/cluster`), not its own."""

    name: str
    role: Role
    serving: bool
    epoch: int
    last_seq: int
    commit_seq: int


class ReplicaHealthData(Struct, frozen=True):
    data: ReplicaHealth


class LeaseRequest(Struct, frozen=True):
    """Replica -> front end, every `lease_renew_ms`: its status, and a request for a lease
    measured on the replica's clock from when it sent this (so a late answer grants less,
    never more). `seq` grows per process: the front end ignores a request older than one it
    has answered, so a delayed request can never undo a newer answer. A primary names in
    `join` the catching-up replicas that hold its whole committed log; it commits nothing
    until the answer to this request (or a later one) tells it whether they joined."""

    status: ReplicaStatus
    seq: int
    join: tuple[str, ...] = ()


class LeaseReply(Struct, frozen=True):
    """Front end -> replica: the installed views of both tiers; `granted` is false for a
    request older than one already answered (the replica ignores it)."""

    views: dict[str, View]
    granted: bool = True


# ---------------------------------------------------------------- catalog commands


class Sell(Struct, frozen=True, tag="sell"):
    idempotency_key: str
    book_id: int
    quantity: int


class UpdateBook(Struct, frozen=True, tag="update_book"):
    """An admin update. Under an `idempotency_key` (the front end always gives one) its
    result is recorded, so that a retry across a failover is executed at most once."""

    book_id: int
    cost_cents: int | None = None
    stock_delta: int = 0
    idempotency_key: str | None = None


CatalogCommand = Sell | UpdateBook


class SaleResult(Struct, frozen=True):
    """`replayed`: the key's sale was recorded by an earlier request (its stored result)."""

    status: Literal["ok", "out_of_stock", "not_found", "key_reused"]
    unit_cost_cents: int = 0
    title: str = ""
    replayed: bool = False


class SellBatch(Struct, frozen=True):
    """Order primary -> catalog primary: the sales of the purchases that arrived while the
    previous call was out, as one call (they join one replicated batch there)."""

    sells: list[Sell]


class SaleOutcome(Struct, frozen=True):
    """One sale of a `SellBatch`: its result, or the error that one command got."""

    result: SaleResult | None = None
    error: ErrorDetail | None = None


class SaleOutcomes(Struct, frozen=True):
    outcomes: list[SaleOutcome]


class SaleMark(Struct, frozen=True, order=True):
    """A position in the catalog's sales, in commit order: (log seq, idempotency key)."""

    seq: int
    key: str


class SaleRecord(Struct, frozen=True):
    """A completed sale as the catalog recorded it under its key."""

    mark: SaleMark
    book_id: int
    quantity: int
    unit_cost_cents: int
    title: str = ""


class SalesPage(Struct, frozen=True):
    """`GET /internal/sales?seq=&key=&limit=`: completed sales after a mark, oldest first."""

    data: list[SaleRecord]


class UpdateResult(Struct, frozen=True):
    """`replayed`: the key's update was recorded by an earlier request (its stored result);
    `key_reused`: the key names another command (another update, or a sale)."""

    status: Literal["ok", "out_of_stock", "not_found", "key_reused"]
    book: Book | None = None
    replayed: bool = False


# ---------------------------------------------------------------- order commands


class RecordOrder(Struct, frozen=True, tag="record_order"):
    """The order of a completed sale; a key that already has its order keeps it."""

    idempotency_key: str
    book_id: int
    quantity: int
    unit_cost_cents: int
    order_id: str
    created_at: str


class Reconciled(Struct, frozen=True, tag="reconciled"):
    """Every catalog sale up to `through` has its order (the reconciler's progress)."""

    through: SaleMark


OrderCommand = RecordOrder | Reconciled


class OrderResult(Struct, frozen=True):
    """`replayed`: the key already had its order (a retry, or the reconciler was first)."""

    order: Order | None = None
    replayed: bool = False


class PurchaseRequest(Struct, frozen=True):
    """Front end -> order primary."""

    idempotency_key: str
    book_id: int
    quantity: int


class PurchaseReply(Struct, frozen=True):
    status: Literal["completed", "out_of_stock", "not_found", "key_reused"]
    order: Order | None = None
    replayed: bool = False
    title: str = ""


class PurchaseBatch(Struct, frozen=True):
    """Front end -> order primary: the purchases that arrived while the previous call was
    out, as one call (each runs on its own there; their sales and orders batch again)."""

    purchases: list[PurchaseRequest]


class PurchaseOutcome(Struct, frozen=True):
    """One purchase of a `PurchaseBatch`: its reply, or the error that one purchase got."""

    reply: PurchaseReply | None = None
    error: ErrorDetail | None = None


class PurchaseOutcomes(Struct, frozen=True):
    outcomes: list[PurchaseOutcome]


encode = msgspec.json.Encoder().encode
