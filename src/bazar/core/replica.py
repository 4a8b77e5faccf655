"""The replica side of primary/backup replication, without I/O.

One class, `Replica`, holds what a replica knows of its own log and of the current view, and
decides; `runtime.py` persists what it decides, then sends (persist, then send).

Rules:
1. The primary of epoch e orders writes as `(e, seq)`, seq contiguous from 1. It keeps its
   write transaction open until every backup of the view has staged the entry, so everything
   in a primary's database is committed: its `commit_seq == last_seq`.
2. A backup stages entries (log only) and applies them to its tables once the primary's
   commit point covers them. Staged entries are the only ones that can ever be discarded.
3. Fencing: nothing from an epoch older than the replica's own is accepted.
4. A process never acts as primary in an epoch it may have used before it restarted: it must
   see a view whose epoch is above the epoch it found on disk at boot (`boot_epoch`). The view
   manager raises the epoch when a primary reports such a boot.
5. Two entries with the same seq and the same epoch are the same entry (one primary per
   epoch); a staged entry that differs from the primary's is from an older epoch, uncommitted,
   and is dropped.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Literal

from bazar.wire import Append, AppendReply, Change, Entry, ReplicaStatus, Role, Upsert, View

RowKey = tuple[str, int | str]


def change_key(change: Change, keys: dict[str, str]) -> RowKey:
    """The (table, key) a row image writes."""
    if isinstance(change, Upsert):
        return (change.table, change.row[keys[change.table]] or 0)
    return (change.table, change.key)


@dataclass(frozen=True, slots=True)
class AppendPlan:
    """What a backup does with one Append: persist these, then send `reply`."""

    reply: AppendReply
    epoch: int
    truncate_from: int | None
    stage: tuple[Entry, ...]
    apply: tuple[Entry, ...]
    commit_seq: int

    @property
    def writes(self) -> bool:
        return bool(self.truncate_from is not None or self.stage or self.apply)


@dataclass(slots=True)
class Replica:
    """State of one replica process; see the module rules."""

    name: str
    tier: str
    pid: int
    incarnation: str
    boot_epoch: int
    epoch: int
    commit_seq: int
    commit_epoch: int
    staged: dict[int, Entry] = field(default_factory=dict)
    view: View | None = None
    match_seq: dict[str, int] = field(default_factory=dict)
    truncations: int = 0

    def __post_init__(self) -> None:
        assert self.epoch >= self.boot_epoch
        assert all(seq > self.commit_seq for seq in self.staged)

    # ---------------------------------------------------------------- log position

    @property
    def last_seq(self) -> int:
        return max(self.staged, default=self.commit_seq)

    @property
    def last_epoch(self) -> int:
        return self.staged[self.last_seq].epoch if self.staged else self.commit_epoch

    def epoch_at(self, seq: int) -> int | None:
        """Epoch of our entry at seq if staged; None if committed or absent."""
        entry = self.staged.get(seq)
        return entry.epoch if entry is not None else None

    # ---------------------------------------------------------------- views and roles

    @property
    def role(self) -> Role:
        view = self.view
        if view is None or view.epoch != self.epoch:
            return "none"
        if view.primary == self.name:
            return "primary" if view.epoch > self.boot_epoch else "none"
        return "backup" if self.name in view.backups else "none"

    def install_view(self, view: View) -> bool:
        """Adopt a view of our tier unless it is older than what we know; the caller has
        already persisted `view.epoch`. Returns whether the view was adopted."""
        assert view.tier == self.tier
        if view.epoch < self.epoch:
            return False
        if self.view is None or view.epoch != self.view.epoch:
            self.match_seq = {}
        self.view = view
        self.epoch = view.epoch
        return True

    def step_down(self) -> None:
        """Stop acting as primary until a newer view: after a failed replication the current
        (epoch, seq) may be staged somewhere, so it must never be reused (rule 4)."""
        self.boot_epoch = max(self.boot_epoch, self.epoch)
        assert self.role != "primary"

    def needs_promotion(self) -> bool:
        """A new primary first applies what it had staged (it may be committed elsewhere)."""
        return self.role == "primary" and bool(self.staged)

    def promotion_plan(self) -> AppendPlan:
        assert self.needs_promotion()
        last = self.last_seq
        return AppendPlan(
            reply=self._reply("ok"),
            epoch=self.epoch,
            truncate_from=None,
            stage=(),
            apply=tuple(self.staged[seq] for seq in sorted(self.staged)),
            commit_seq=last,
        )

    def status(self) -> ReplicaStatus:
        return ReplicaStatus(
            name=self.name,
            tier=self.tier,
            pid=self.pid,
            incarnation=self.incarnation,
            epoch=self.epoch,
            boot_epoch=self.boot_epoch,
            role=self.role,
            last_seq=self.last_seq,
            last_epoch=self.last_epoch,
            commit_seq=self.commit_seq,
        )

    # ---------------------------------------------------------------- primary side

    def next_seq(self) -> int:
        assert self.role == "primary"
        assert not self.staged
        return self.commit_seq + 1

    def backups(self) -> tuple[str, ...]:
        assert self.view is not None
        return self.view.backups

    def append_for(self, entries: list[Entry], prev_epoch: int) -> Append:
        """The Append that carries `entries` (contiguous) to a backup; `prev_epoch` is the
        epoch of our entry just before the first one (0 before seq 1)."""
        assert entries
        assert all(b.seq == a.seq + 1 for a, b in itertools.pairwise(entries))
        first = entries[0].seq
        return Append(
            epoch=self.epoch,
            primary=self.name,
            prev_seq=first - 1,
            prev_epoch=prev_epoch,
            entries=entries,
            commit_seq=self.commit_seq,
        )

    def heartbeat_append(self) -> Append:
        """An empty Append: carries the commit point to backups when no write follows."""
        return Append(
            epoch=self.epoch,
            primary=self.name,
            prev_seq=self.commit_seq,
            prev_epoch=self.commit_epoch,
            entries=[],
            commit_seq=self.commit_seq,
        )

    def on_append_reply(
        self, backup: str, entry_seq: int, reply: AppendReply
    ) -> Literal["acked", "resend", "deposed"]:
        """Judge a backup's answer to the Append that carried `entry_seq`."""
        if reply.status == "stale_epoch" or reply.epoch > self.epoch:
            return "deposed"
        if reply.status == "ok" and reply.last_seq >= entry_seq:
            self.match_seq[backup] = entry_seq
            return "acked"
        self.match_seq[backup] = reply.last_seq
        return "resend"

    def resend_from(self, backup: str) -> int:
        """First seq to send a backup that reported a gap."""
        return self.match_seq.get(backup, self.commit_seq) + 1

    def on_commit(self, entry: Entry) -> None:
        assert self.role == "primary"
        assert entry.seq == self.commit_seq + 1
        assert entry.epoch == self.epoch
        self.commit_seq = entry.seq
        self.commit_epoch = entry.epoch

    # ---------------------------------------------------------------- backup side

    def plan_append(self, message: Append) -> AppendPlan:
        """Decide what to do with an Append (rules 2, 3, 5)."""
        if message.epoch < self.epoch:
            return self._plan_without_entries("stale_epoch", self.epoch)
        if message.prev_seq > self.last_seq:
            return self._plan_without_entries("gap", message.epoch)
        truncate_from: int | None = None
        last = self.last_seq
        ours = self.epoch_at(message.prev_seq)
        if ours is not None and message.prev_epoch != ours:
            truncate_from = message.prev_seq
            last = message.prev_seq - 1
            return self._plan(message, "gap", truncate_from, (), last)
        stage: list[Entry] = []
        for entry in message.entries:
            if entry.seq <= self.commit_seq:
                continue
            if entry.seq <= last:
                if self.epoch_at(entry.seq) == entry.epoch:
                    continue
                truncate_from = entry.seq if truncate_from is None else truncate_from
                last = entry.seq - 1
            assert entry.seq == last + 1
            stage.append(entry)
            last = entry.seq
        return self._plan(message, "ok", truncate_from, tuple(stage), last)

    def _plan(
        self,
        message: Append,
        status: Literal["ok", "gap"],
        truncate_from: int | None,
        stage: tuple[Entry, ...],
        last: int,
    ) -> AppendPlan:
        commit_seq = max(self.commit_seq, min(message.commit_seq, last))
        candidates = {
            seq: e for seq, e in self.staged.items() if truncate_from is None or seq < truncate_from
        }
        candidates.update((entry.seq, entry) for entry in stage)
        apply = tuple(candidates[seq] for seq in sorted(candidates) if seq <= commit_seq)
        reply = AppendReply(
            status=status, epoch=message.epoch, last_seq=last, commit_seq=commit_seq
        )
        return AppendPlan(
            reply=reply,
            epoch=message.epoch,
            truncate_from=truncate_from,
            stage=stage,
            apply=apply,
            commit_seq=commit_seq,
        )

    def _plan_without_entries(
        self, status: Literal["gap", "stale_epoch"], epoch: int
    ) -> AppendPlan:
        return AppendPlan(
            reply=self._reply(status, epoch),
            epoch=max(epoch, self.epoch),
            truncate_from=None,
            stage=(),
            apply=(),
            commit_seq=self.commit_seq,
        )

    def _reply(
        self, status: Literal["ok", "gap", "stale_epoch"], epoch: int | None = None
    ) -> AppendReply:
        return AppendReply(
            status=status,
            epoch=self.epoch if epoch is None else max(epoch, self.epoch),
            last_seq=self.last_seq,
            commit_seq=self.commit_seq,
        )

    def on_persisted(self, plan: AppendPlan) -> None:
        """The plan is on disk: make memory agree."""
        assert plan.epoch >= self.epoch
        assert plan.commit_seq >= self.commit_seq
        if plan.truncate_from is not None:
            assert plan.truncate_from > self.commit_seq
            for seq in [seq for seq in self.staged if seq >= plan.truncate_from]:
                del self.staged[seq]
            self.truncations += 1
        for entry in plan.stage:
            self.staged[entry.seq] = entry
        for entry in plan.apply:
            assert entry.seq == self.commit_seq + 1
            del self.staged[entry.seq]
            self.commit_seq = entry.seq
            self.commit_epoch = entry.epoch
        assert self.commit_seq == plan.commit_seq
        self.epoch = plan.epoch
        assert all(seq > self.commit_seq for seq in self.staged)

    # ---------------------------------------------------------------- reads (CRAQ)

    def dirty(self, keys: dict[str, str], table: str) -> set[int | str]:
        """Keys of `table` that a staged entry writes: their committed value is unknown here."""
        found: set[int | str] = set()
        for entry in self.staged.values():
            for change in entry.changes:
                changed_table, key = change_key(change, keys)
                if changed_table == table:
                    found.add(key)
        return found

    def committed_overlay(self, primary_commit_seq: int) -> list[Entry]:
        """Staged entries that the primary reports committed, in order."""
        return [self.staged[seq] for seq in sorted(self.staged) if seq <= primary_commit_seq]
