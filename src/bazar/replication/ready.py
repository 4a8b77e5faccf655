"""The one output of every replica step (etcd-io/raft's `Ready`).

The caller applies a `Ready` in this order: `persist` (in order, each durable before the
next), then `core.advance(ready)`, then `send` and `reply`. Nothing is sent before what it
depends on is on disk (docs/style.md rule 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bazar.wire import Append, AppendReply, Entry, Invalidate, LeaseRequest

FRONTEND = "frontend"
"""The name under which a replica addresses the front end in `Send.to`."""


@dataclass(frozen=True, slots=True)
class SaveEpoch:
    """Record the highest epoch seen, before acting in it."""

    epoch: int


@dataclass(frozen=True, slots=True)
class Stage:
    """On a backup (or a primary promoting its staged suffix), in one transaction: drop a
    stale staged suffix from `truncate_from`, stage `stage`, apply `apply` (committed), and
    record `epoch` and `commit_seq`."""

    epoch: int
    truncate_from: int | None
    stage: tuple[Entry, ...]
    apply: tuple[Entry, ...]
    commit_seq: int

    @property
    def writes(self) -> bool:
        return bool(self.truncate_from is not None or self.stage or self.apply)


@dataclass(frozen=True, slots=True)
class CommitBatch:
    """On a primary: COMMIT the open batch transaction that logged `entry`, then answer
    the batch's commands with their results."""

    entry: Entry


@dataclass(frozen=True, slots=True)
class AbortBatch:
    """On a primary: ROLLBACK the open batch. Its commands' outcome is unknown to their
    callers (the entry may be staged on a backup and committed by a new primary), unless
    `definite`: the batch was never sent, so it certainly did not happen."""

    reason: str
    definite: bool = False


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """Replace the whole database by the primary's snapshot that came with this step (it
    holds every entry up to `commit_seq`); keep `epoch` as the highest seen."""

    epoch: int
    commit_seq: int
    commit_epoch: int


@dataclass(frozen=True, slots=True)
class PruneLog:
    """Forget committed log entries below `below_seq` (the log is bounded)."""

    below_seq: int


@dataclass(frozen=True, slots=True)
class SnapshotWanted:
    """To a peer that needs entries we have pruned: the runtime takes a snapshot of our
    committed database (SQLite backup API) and sends it as a `Snapshot`."""

    epoch: int
    primary: str


Persist = SaveEpoch | Stage | CommitBatch | AbortBatch | InstallSnapshot | PruneLog
Message = Append | LeaseRequest | Invalidate | SnapshotWanted


@dataclass(frozen=True, slots=True)
class Send:
    """A message to a replica (by name) or to the front end (`FRONTEND`). Every send ends in
    exactly one `on_*_reply` or `on_*_failed` step."""

    to: str
    message: Message


@dataclass(slots=True)
class Ready:
    persist: list[Persist] = field(default_factory=list)
    send: list[Send] = field(default_factory=list)
    reply: AppendReply | None = None
    transitions: list[str] = field(default_factory=list)

    def persist_once(self, effect: Persist) -> None:
        assert effect not in self.persist
        self.persist.append(effect)
