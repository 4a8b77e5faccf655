"""The view manager (configuration manager) of both replicated tiers, without I/O.

The front end owns one `ViewManager`. It numbers views `(epoch, primary, backups)`; the
adapter persists a new view (fsync, compare-and-set on the epoch) before installing and
announcing it, so epochs never go backwards and only the front end creates them: that is
what makes split brain impossible. Everything that changes a view lives here.

Rules:
1. The first view of a tier (epoch 1) names its first replica primary, the rest backups.
2. Replicas ask for leases (`on_lease`); a grant at `now_ms` lets the replica serve until at
   most `now_ms + lease_ms` (it measures from when it sent the request, which is earlier).
   A replica is *expired* once `lease_ms + lease_margin_ms` have passed since its last grant:
   only then may a view leave it out (so it has stopped serving first).
3. An expired backup is dropped (new epoch), while the primary is alive.
4. An expired primary is replaced by the alive backup with the highest (last_epoch,
   last_seq); every backup of the view holds every committed entry, so any would be safe.
   Only backups of the view (in sync) are ever promoted, and never one being removed (it is
   granted no more leases: as primary it would stop the tier).
5. A primary that restarted may not reuse an epoch it has seen: when it reports
   `boot_epoch >= epoch`, the view is re-issued with epoch + 1.
6. A catching-up member joins the backups only when the primary names it (`join`): the
   primary holds every write until it hears the answer, so it joins holding every commit.
7. Nothing is decided about a replica within one lease of the manager's own start (a lease
   granted by an earlier incarnation of the front end may still run), nor while no replica
   of the tier is alive (the front end itself may have been stalled).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bazar.wire import LeaseRequest, Member, ReplicaStatus, View

State = Literal["in_sync", "catching_up", "down"]


@dataclass(frozen=True, slots=True)
class Leases:
    lease_ms: int = 1000
    lease_margin_ms: int = 100
    unsafe_promote_catching_up: bool = False
    """A deliberate bug, for the simulator's controls only: promote any alive member."""

    @property
    def expiry_ms(self) -> int:
        return self.lease_ms + self.lease_margin_ms


@dataclass(slots=True)
class Health:
    """What the last lease request told us about one replica."""

    status: ReplicaStatus | None = None
    granted_ms: int = 0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class ViewReady:
    """The one output of a view-manager step (`on_lease`, `tick`), as a replica step's is a
    `Ready`: the answer to the lease request (`granted`), and the views the adapter must
    persist (compare-and-set on the epoch), then install and announce, in order."""

    granted: bool = False
    install: tuple[View, ...] = ()

    def __post_init__(self) -> None:
        tiers = [view.tier for view in self.install]
        assert len(set(tiers)) == len(tiers), "at most one new view per tier and step"


NOTHING = ViewReady()


def check_view(view: View) -> View:
    """The shape of every view: one primary, never also a backup, among unique members."""
    names = [member.name for member in view.members]
    assert len(set(names)) == len(names), "member names are unique"
    assert view.epoch >= 1
    assert view.primary in names
    assert view.primary not in view.backups, "the primary is never also a backup"
    assert len(set(view.backups)) == len(view.backups), "a backup is named once"
    assert set(view.backups) <= set(names), "every backup is a member"
    return view


def initial_view(tier: Literal["catalog", "order"], members: tuple[Member, ...]) -> View:
    assert members
    return check_view(
        View(
            tier=tier,
            epoch=1,
            primary=members[0].name,
            backups=tuple(member.name for member in members[1:]),
            members=members,
        )
    )


def next_view(
    view: View,
    *,
    primary: str | None = None,
    backups: tuple[str, ...] | None = None,
    members: tuple[Member, ...] | None = None,
) -> View:
    new = View(
        tier=view.tier,
        epoch=view.epoch + 1,
        primary=view.primary if primary is None else primary,
        backups=view.backups if backups is None else backups,
        members=view.members if members is None else members,
    )
    return check_view(new)


@dataclass(slots=True)
class ViewManager:
    views: dict[str, View]
    booted_ms: int
    leases: Leases = field(default_factory=Leases)
    health: dict[str, dict[str, Health]] = field(default_factory=dict)
    leaving: set[str] = field(default_factory=set)
    """Replicas being removed: granted no more leases, so they drop out like dead ones."""

    def __post_init__(self) -> None:
        for tier, view in self.views.items():
            assert view.tier == tier
            check_view(view)  # (the views file is ours: written only by `install`'s caller)
            known = self.health.setdefault(tier, {})
            for member in view.members:
                known.setdefault(member.name, Health(granted_ms=self.booted_ms))

    # ---------------------------------------------------------------- events

    def on_lease(self, request: LeaseRequest, now_ms: int) -> ViewReady:
        """Record a lease request: whether it is granted (not a request older than one
        already answered), and a new view of its tier to persist and install, if any."""
        status = request.status
        view = self.views.get(status.tier)
        if view is None or status.name not in self.health[status.tier]:
            return NOTHING
        if status.name in self.leaving:
            return NOTHING
        health = self.health[status.tier][status.name]
        previous = health.status
        same_process = previous is not None and previous.incarnation == status.incarnation
        if same_process and request.seq <= health.seq:
            return NOTHING
        assert now_ms >= health.granted_ms, "a grant never moves a lease back"
        health.status = status
        health.seq = request.seq
        health.granted_ms = now_ms
        if status.name != view.primary:
            return ViewReady(granted=True)
        if status.boot_epoch >= view.epoch:
            reissued = self._successor(view, next_view(view), now_ms)  # rule 5
            return ViewReady(granted=True, install=(reissued,))
        joiners = self._joiners(view, request, now_ms)
        if joiners:
            new = next_view(view, backups=(*view.backups, *joiners))  # rule 6
            return ViewReady(granted=True, install=(self._successor(view, new, now_ms),))
        return ViewReady(granted=True)

    def _joiners(self, view: View, request: LeaseRequest, now_ms: int) -> tuple[str, ...]:
        if request.status.epoch != view.epoch or request.status.role != "primary":
            return ()
        members = {m.name for m in view.members}
        return tuple(
            name
            for name in dict.fromkeys(request.join)  # (a replica's list: maybe repeated)
            if name in members
            and name != view.primary
            and name not in view.backups
            and self.alive(view.tier, name, now_ms)
        )

    def tick(self, now_ms: int) -> ViewReady:
        """New views (at most one per tier) for replicas whose lease has expired."""
        if now_ms < self.booted_ms + self.leases.expiry_ms:
            return NOTHING  # rule 7
        changes = []
        for view in self.views.values():
            new = self._tick_tier(view, now_ms)
            if new is not None:
                changes.append(new)
        return ViewReady(install=tuple(changes))

    def _tick_tier(self, view: View, now_ms: int) -> View | None:
        alive = [name for name in view.backups if self.alive(view.tier, name, now_ms)]
        if self.alive(view.tier, view.primary, now_ms):
            if len(alive) == len(view.backups):
                return None
            return self._successor(view, next_view(view, backups=tuple(alive)), now_ms)  # rule 3
        candidates = [name for name in alive if name not in self.leaving]
        if self.leases.unsafe_promote_catching_up:
            others = (m.name for m in view.members if m.name != view.primary)
            candidates = [name for name in others if self.alive(view.tier, name, now_ms)]
        if not candidates:
            return None  # rules 4 and 7: nobody to promote, or we cannot tell
        chosen = max(candidates, key=lambda name: self._position(view.tier, name))
        assert chosen in view.backups or self.leases.unsafe_promote_catching_up, "rule 4"
        assert self.alive(view.tier, chosen, now_ms), "rule 7: promoted only when heard from"
        new = next_view(
            view, primary=chosen, backups=tuple(name for name in alive if name != chosen)
        )
        return self._successor(view, new, now_ms)

    def _successor(self, view: View, new: View, now_ms: int) -> View:
        """The rules a new view keeps that depend on the leases (`install` checks the rest):
        only an expired replica is left out (rule 2), only an alive one joins."""
        serving = {view.primary, *view.backups}
        for name in serving - {new.primary, *new.backups}:
            assert not self.may_serve(view.tier, name, now_ms), "left out before its lease ran out"
        for name in {new.primary, *new.backups} - serving:
            assert self.alive(view.tier, name, now_ms), "a replica joins only while alive"
        return new

    def _position(self, tier: str, name: str) -> tuple[int, int, str]:
        status = self.health[tier][name].status
        assert status is not None
        return (status.last_epoch, status.last_seq, name)

    def install(self, view: View) -> None:
        """The view is persisted: make it current. Every view passes here: one per epoch
        (so one primary per epoch), each the successor of the current one."""
        current = self.views[view.tier]
        assert view.epoch == current.epoch + 1, "epochs grow by one per new view"
        check_view(view)
        if view.primary != current.primary and not self.leases.unsafe_promote_catching_up:
            assert view.primary in current.backups, "rule 4: only an in-sync backup is promoted"
        self.views[view.tier] = view
        known = self.health[view.tier]
        for member in view.members:
            known.setdefault(member.name, Health(granted_ms=-self.leases.expiry_ms))
        for name in set(known) - {m.name for m in view.members}:
            del known[name]
        assert len(known) == len(view.members), "leases are tracked for the members only"

    # ---------------------------------------------------------------- membership (admin)

    def add_member(self, tier: str, member: Member) -> View:
        """A new member starts catching up; the primary joins it once it holds the log."""
        view = self.views[tier]
        assert member.name not in {m.name for m in view.members}
        return next_view(view, members=(*view.members, member))

    def remove_member(self, tier: str, name: str) -> View:
        """Forget a member that is neither primary nor backup any more (rule 3 dropped it
        once its lease expired, or it never joined)."""
        view = self.views[tier]
        assert name != view.primary
        assert name not in view.backups
        return next_view(view, members=tuple(m for m in view.members if m.name != name))

    def switchover(self, tier: str, to: str, now_ms: int) -> View:
        """Move the primary role to `to`, an in-sync backup. The old primary stays a backup
        while it may still serve (rule 7: a lease an earlier incarnation of the front end
        granted counts), so the new one commits nothing before the old one has taken its
        first Append of the new epoch, and stopped acting as primary; left out, its lease has
        expired already."""
        view = self.views[tier]
        assert to in self.in_sync(tier, now_ms)
        assert to in view.backups
        backups = [name for name in view.backups if name != to]
        if self.may_serve(tier, view.primary, now_ms):
            backups.append(view.primary)
        return self._successor(view, next_view(view, primary=to, backups=tuple(backups)), now_ms)

    def best_backup(self, tier: str, now_ms: int) -> str | None:
        """The in-sync backup with the highest log position (a switchover's default)."""
        view = self.views[tier]
        candidates = [name for name in self.in_sync(tier, now_ms) if name in view.backups]
        if not candidates:
            return None
        return max(candidates, key=lambda name: self._position(tier, name))

    # ---------------------------------------------------------------- queries

    def may_serve(self, tier: str, name: str, now_ms: int) -> bool:
        """Its lease may still run: granted less than `expiry_ms` ago, by us or (within
        `expiry_ms` of our start) by an earlier incarnation of the front end. A view may leave
        a replica out only once this is False (rule 2)."""
        health = self.health[tier].get(name)
        granted_ms = self.booted_ms if health is None else health.granted_ms
        return now_ms < max(granted_ms, self.booted_ms) + self.leases.expiry_ms

    def alive(self, tier: str, name: str, now_ms: int) -> bool:
        """Granted a lease recently enough that it may still be serving (and has a status)."""
        health = self.health[tier].get(name)
        if health is None or health.status is None:
            return False
        return now_ms < health.granted_ms + self.leases.expiry_ms

    def state(self, tier: str, name: str, now_ms: int) -> State:
        """`in_sync`: alive and playing the role the view gives it; `catching_up`: alive
        but not (yet) in that role; `down`: no lease request for longer than a lease."""
        view = self.views[tier]
        if not self.alive(tier, name, now_ms):
            return "down"
        status = self.health[tier][name].status
        assert status is not None
        if name != view.primary and name not in view.backups:
            return "catching_up"
        expected = "primary" if name == view.primary else "backup"
        if status.epoch != view.epoch or status.role != expected:
            return "catching_up"
        return "in_sync"

    def primary_up(self, tier: str, now_ms: int) -> bool:
        return self.state(tier, self.views[tier].primary, now_ms) == "in_sync"

    def in_sync(self, tier: str, now_ms: int) -> list[str]:
        view = self.views[tier]
        members = (view.primary, *view.backups)
        return [name for name in members if self.state(tier, name, now_ms) == "in_sync"]
