"""The pure view manager (`frontend/views.py`), one group of tests per numbered rule, and the
balancer that picks among the replicas it reports in sync."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from bazar.frontend.balancer import RoundRobin
from bazar.frontend.views import Leases, ViewManager, initial_view, next_view
from bazar.wire import LeaseRequest, Member, ReplicaStatus, Role, View

LEASE_MS = 1000
MARGIN_MS = 100
EXPIRY_MS = LEASE_MS + MARGIN_MS
LEASES = Leases(lease_ms=LEASE_MS, lease_margin_ms=MARGIN_MS)
BOOTED_MS = 0
AWAKE_MS = BOOTED_MS + EXPIRY_MS  # the first instant the manager decides anything (rule 7)
NAMES = ("c1", "c2", "c3")
MEMBERS = tuple(Member(name=name, url=f"http://{name}") for name in NAMES)


def catalog_view(
    epoch: int = 1, primary: str = "c1", backups: tuple[str, ...] = ("c2", "c3")
) -> View:
    return View(tier="catalog", epoch=epoch, primary=primary, backups=backups, members=MEMBERS)


@dataclass
class Tier:
    """The catalog tier as the manager sees it: each replica asks for leases with a growing
    seq, reporting the role the manager's view gives it unless told otherwise."""

    views: ViewManager
    seqs: dict[str, int] = field(default_factory=dict)

    @property
    def view(self) -> View:
        return self.views.views["catalog"]

    def status(
        self,
        name: str,
        *,
        epoch: int | None = None,
        boot_epoch: int = 0,
        role: Role | None = None,
        last: tuple[int, int] = (0, 0),
        incarnation: str = "first",
    ) -> ReplicaStatus:
        view = self.view
        if role is None:
            role = "primary" if name == view.primary else "none"
            role = "backup" if name in view.backups else role
        return ReplicaStatus(
            name=name,
            tier="catalog",
            pid=7,
            incarnation=f"{name}-{incarnation}",
            epoch=view.epoch if epoch is None else epoch,
            boot_epoch=boot_epoch,
            role=role,
            last_seq=last[1],
            last_epoch=last[0],
            commit_seq=last[1],
        )

    def lease(
        self,
        name: str,
        now_ms: int,
        *,
        join: tuple[str, ...] = (),
        seq: int | None = None,
        status: ReplicaStatus | None = None,
    ) -> tuple[bool, View | None]:
        """`name` asks for a lease at `now_ms` (its next seq unless `seq` is given)."""
        if seq is None:
            seq = self.seqs.get(name, 0) + 1
        self.seqs[name] = max(seq, self.seqs.get(name, 0))
        request = LeaseRequest(status=status or self.status(name), seq=seq, join=join)
        ready = self.views.on_lease(request, now_ms)
        assert len(ready.install) <= 1
        return ready.granted, ready.install[0] if ready.install else None

    def alive_at(self, now_ms: int, *names: str) -> None:
        for name in names:
            granted, new_view = self.lease(name, now_ms)
            assert granted
            assert new_view is None

    def tick(self, now_ms: int) -> View | None:
        """One manager tick; its new view (if any) is persisted and installed."""
        changes = self.views.tick(now_ms).install
        assert len(changes) <= 1
        for change in changes:
            self.views.install(change)
        return changes[0] if changes else None


def tier(view: View | None = None, *, leases: Leases = LEASES, booted_ms: int = BOOTED_MS) -> Tier:
    views = ViewManager({"catalog": view or catalog_view()}, booted_ms=booted_ms, leases=leases)
    return Tier(views)


# ---------------------------------------------------------------- rule 1: the first view


def test_first_view_names_the_first_member_primary_and_the_rest_backups() -> None:
    view = initial_view("catalog", MEMBERS)
    assert (view.epoch, view.primary, view.backups) == (1, "c1", ("c2", "c3"))
    assert view.members == MEMBERS


def test_next_view_keeps_what_it_is_not_told_to_change() -> None:
    view = next_view(catalog_view(), backups=("c2",))
    assert (view.epoch, view.primary, view.backups, view.members) == (2, "c1", ("c2",), MEMBERS)


# ---------------------------------------------------------------- rule 2: leases


def test_lease_is_granted_to_a_member_and_refused_to_a_stranger() -> None:
    t = tier()
    assert t.lease("c2", 10) == (True, None)
    assert t.lease("c9", 10) == (False, None)
    assert not t.views.alive("catalog", "c9", 10)


def test_request_older_than_one_answered_is_not_granted_and_extends_nothing() -> None:
    t = tier()
    assert t.lease("c2", 10, seq=2) == (True, None)
    assert t.lease("c2", 500, seq=1) == (False, None)
    assert t.lease("c2", 600, seq=2) == (False, None)  # nor the same one again
    assert t.views.alive("catalog", "c2", 10 + EXPIRY_MS - 1)
    assert not t.views.alive("catalog", "c2", 10 + EXPIRY_MS)
    assert t.lease("c2", 700, seq=3) == (True, None)


def test_new_incarnation_is_granted_from_seq_one() -> None:
    t = tier()
    t.lease("c2", 10, seq=40)
    restarted = t.status("c2", incarnation="second")
    assert t.lease("c2", 20, seq=1, status=restarted) == (True, None)


def test_replica_is_alive_for_lease_and_margin_after_its_last_grant() -> None:
    t = tier()
    assert not t.views.alive("catalog", "c2", 10)  # never asked
    t.alive_at(100, "c2")
    assert t.views.alive("catalog", "c2", 100 + LEASE_MS)  # it may still be serving
    assert t.views.alive("catalog", "c2", 100 + EXPIRY_MS - 1)
    assert not t.views.alive("catalog", "c2", 100 + EXPIRY_MS)


# ---------------------------------------------------------------- rule 3: dropping a backup


def test_expired_backup_is_dropped_only_after_lease_and_margin_since_its_last_grant() -> None:
    t = tier()
    start_ms = AWAKE_MS + 100
    t.alive_at(start_ms, "c1", "c2", "c3")
    t.alive_at(start_ms + 900, "c1", "c3")  # c2 falls silent
    assert t.tick(start_ms + EXPIRY_MS - 1) is None
    dropped = t.tick(start_ms + EXPIRY_MS)
    assert dropped is not None
    assert (dropped.epoch, dropped.primary, dropped.backups) == (2, "c1", ("c3",))
    assert dropped.members == MEMBERS  # still a member: it may catch up and join again
    assert t.tick(start_ms + EXPIRY_MS + 1) is None


def test_expired_backups_are_kept_while_the_primary_is_expired_too() -> None:
    t = tier()
    t.alive_at(AWAKE_MS, "c1", "c2", "c3")
    assert t.tick(AWAKE_MS + EXPIRY_MS) is None  # the front end itself may have stalled
    assert t.view.epoch == 1


# ---------------------------------------------------------------- rule 4: replacing the primary


@pytest.mark.parametrize(
    ("c2_last", "c3_last", "chosen"),
    [
        ((1, 9), (2, 3), "c3"),  # a newer epoch wins over a longer log
        ((2, 5), (2, 3), "c2"),
        ((2, 3), (2, 3), "c3"),  # a tie is broken by name, deterministically
    ],
)
def test_expired_primary_is_replaced_by_the_alive_backup_with_the_highest_position(
    c2_last: tuple[int, int], c3_last: tuple[int, int], chosen: str
) -> None:
    t = tier()
    t.alive_at(AWAKE_MS, "c1")
    at_ms = AWAKE_MS + 500
    t.lease("c2", at_ms, status=t.status("c2", last=c2_last))
    t.lease("c3", at_ms, status=t.status("c3", last=c3_last))
    assert t.tick(AWAKE_MS + EXPIRY_MS - 1) is None
    promoted = t.tick(AWAKE_MS + EXPIRY_MS)
    assert promoted is not None
    other = "c3" if chosen == "c2" else "c2"
    assert (promoted.epoch, promoted.primary, promoted.backups) == (2, chosen, (other,))


def test_promotion_leaves_out_the_old_primary_and_dead_backups() -> None:
    t = tier()
    t.alive_at(AWAKE_MS, "c1", "c3")
    t.alive_at(AWAKE_MS + 500, "c2")
    promoted = t.tick(AWAKE_MS + EXPIRY_MS)
    assert promoted is not None
    assert (promoted.primary, promoted.backups) == ("c2", ())


def test_a_backup_being_removed_is_never_promoted() -> None:
    """Found by the simulator (seeds 69, 98): the backup being removed was promoted when the
    primary expired; granted no lease as it leaves, it stopped the tier."""
    t = tier()
    t.alive_at(AWAKE_MS, "c1")
    at_ms = AWAKE_MS + 500
    t.lease("c2", at_ms, status=t.status("c2", last=(1, 9)))  # the best position
    t.lease("c3", at_ms, status=t.status("c3", last=(1, 5)))
    t.views.leaving.add("c2")
    promoted = t.tick(AWAKE_MS + EXPIRY_MS)
    assert promoted is not None
    assert (promoted.primary, promoted.backups) == ("c3", ("c2",))


def test_an_expired_primary_whose_only_alive_backup_is_leaving_is_not_replaced() -> None:
    t = tier(catalog_view(backups=("c2",)))
    t.alive_at(AWAKE_MS, "c1")
    t.alive_at(AWAKE_MS + 500, "c2")
    t.views.leaving.add("c2")
    assert t.tick(AWAKE_MS + EXPIRY_MS) is None


def test_expired_primary_is_never_replaced_by_a_catching_up_member() -> None:
    t = tier(catalog_view(backups=("c2",)))  # c3: a member, catching up
    t.alive_at(AWAKE_MS, "c1")
    t.lease("c2", AWAKE_MS + 500, status=t.status("c2", last=(1, 3)))
    t.lease("c3", AWAKE_MS + 500, status=t.status("c3", last=(1, 8)))
    promoted = t.tick(AWAKE_MS + EXPIRY_MS)
    assert promoted is not None
    assert (promoted.primary, promoted.backups) == ("c2", ())


def test_expired_primary_with_only_catching_up_members_alive_is_not_replaced() -> None:
    t = tier(catalog_view(backups=("c2",)))
    t.alive_at(AWAKE_MS, "c1", "c2")
    t.lease("c3", AWAKE_MS + 500, status=t.status("c3", last=(1, 8)))
    assert t.tick(AWAKE_MS + EXPIRY_MS) is None
    assert t.view.primary == "c1"


def test_unsafe_flag_lets_a_catching_up_member_be_promoted() -> None:
    unsafe = Leases(lease_ms=LEASE_MS, lease_margin_ms=MARGIN_MS, unsafe_promote_catching_up=True)
    t = tier(catalog_view(backups=("c2",)), leases=unsafe)
    t.alive_at(AWAKE_MS, "c1", "c2")
    t.lease("c3", AWAKE_MS + 500, status=t.status("c3", last=(1, 8)))
    promoted = t.tick(AWAKE_MS + EXPIRY_MS)
    assert promoted is not None
    assert (promoted.primary, promoted.backups) == ("c3", ())


# ---------------------------------------------------------------- rule 5: a restarted primary


def test_primary_reporting_a_boot_epoch_of_the_view_gets_a_new_epoch() -> None:
    t = tier()
    restarted = t.status("c1", boot_epoch=1, role="none")
    granted, new = t.lease("c1", 10, status=restarted)
    assert granted
    assert new is not None
    assert (new.epoch, new.primary, new.backups) == (2, "c1", ("c2", "c3"))


def test_primary_reporting_an_older_boot_epoch_keeps_its_view() -> None:
    t = tier(catalog_view(epoch=3))
    assert t.lease("c1", 10, status=t.status("c1", boot_epoch=2)) == (True, None)


def test_restarted_backup_does_not_change_the_view() -> None:
    t = tier()
    assert t.lease("c2", 10, status=t.status("c2", boot_epoch=5, role="none")) == (True, None)


# ---------------------------------------------------------------- rule 6: joining


def test_primary_names_an_alive_catching_up_member_and_it_joins_the_backups() -> None:
    t = tier(catalog_view(backups=("c2",)))
    t.alive_at(10, "c3")
    granted, joined = t.lease("c1", 20, join=("c3",))
    assert granted
    assert joined is not None
    assert (joined.epoch, joined.primary, joined.backups) == (2, "c1", ("c2", "c3"))


@pytest.mark.parametrize(
    "case",
    ["not_alive", "named_by_a_backup", "stale_epoch", "not_serving", "not_catching_up"],
)
def test_join_adds_only_alive_catching_up_members_named_by_the_current_primary(
    case: str,
) -> None:
    t = tier(catalog_view(backups=("c2",)))
    if case != "not_alive":
        t.alive_at(10, "c3")
    t.alive_at(10, "c2")
    join: tuple[str, ...] = ("c3",)
    asker, status = "c1", t.status("c1")
    if case == "named_by_a_backup":
        asker, status = "c2", t.status("c2")
    elif case == "stale_epoch":
        status = t.status("c1", epoch=0)
    elif case == "not_serving":
        status = t.status("c1", role="none")
    elif case == "not_catching_up":
        join = ("c1", "c2", "c9")  # itself, a backup, a stranger
    assert t.lease(asker, 20, join=join, status=status) == (True, None)


def test_join_of_a_member_that_expired_is_refused() -> None:
    t = tier(catalog_view(backups=("c2",)))
    t.alive_at(10, "c3")
    assert t.lease("c1", 10 + EXPIRY_MS, join=("c3",)) == (True, None)


# ---------------------------------------------------------------- rule 7: waking up


def test_nothing_is_decided_within_one_lease_of_the_manager_start() -> None:
    booted_ms = 5000
    t = tier(booted_ms=booted_ms)
    t.alive_at(booted_ms + 1, "c1", "c2")  # c3 is silent; c1 and c2 stay alive throughout
    assert t.tick(booted_ms + LEASE_MS) is None  # a lease granted before the restart may run
    assert t.tick(booted_ms + EXPIRY_MS - 1) is None
    dropped = t.tick(booted_ms + EXPIRY_MS)
    assert dropped is not None
    assert dropped.backups == ("c2",)


def test_primary_silent_since_the_manager_start_is_replaced_only_after_one_lease() -> None:
    booted_ms = 5000
    t = tier(booted_ms=booted_ms)
    t.alive_at(booted_ms + 1, "c2", "c3")
    assert t.tick(booted_ms + EXPIRY_MS - 1) is None
    promoted = t.tick(booted_ms + EXPIRY_MS)
    assert promoted is not None
    assert promoted.primary in ("c2", "c3")


# ---------------------------------------------------------------- install and state


def test_install_tracks_new_members_and_forgets_removed_ones() -> None:
    t = tier()
    t.alive_at(10, "c3")
    fewer = (*MEMBERS[:2], Member(name="c4", url="http://c4"))
    new = View(tier="catalog", epoch=2, primary="c1", backups=("c2",), members=fewer)
    t.views.install(new)
    assert t.view == new
    assert t.views.state("catalog", "c4", 20) == "down"
    assert t.lease("c3", 20) == (False, None)
    assert t.lease("c4", 20) == (True, None)
    with pytest.raises(AssertionError):
        t.views.install(new)  # an epoch is installed once, and never goes back


def test_state_is_down_until_a_replica_asks_and_after_its_lease_expires() -> None:
    t = tier()
    assert t.views.state("catalog", "c2", 10) == "down"
    t.alive_at(10, "c2")
    assert t.views.state("catalog", "c2", 10) == "in_sync"
    assert t.views.state("catalog", "c2", 10 + EXPIRY_MS) == "down"


def test_state_is_catching_up_for_a_member_outside_the_view_or_in_the_wrong_role() -> None:
    t = tier(catalog_view(backups=("c2",)))
    t.alive_at(10, "c3")
    assert t.views.state("catalog", "c3", 10) == "catching_up"
    t.lease("c2", 10, status=t.status("c2", epoch=0))
    assert t.views.state("catalog", "c2", 10) == "catching_up"  # has not seen the view yet
    t.lease("c1", 10, status=t.status("c1", role="none"))
    assert t.views.state("catalog", "c1", 10) == "catching_up"
    t.lease("c2", 11)
    assert t.views.state("catalog", "c2", 11) == "in_sync"


def test_primary_up_needs_a_primary_in_sync() -> None:
    t = tier()
    assert not t.views.primary_up("catalog", 10)
    t.lease("c1", 10, status=t.status("c1", role="none"))
    assert not t.views.primary_up("catalog", 10)
    t.lease("c1", 11)
    assert t.views.primary_up("catalog", 11)
    assert not t.views.primary_up("catalog", 11 + EXPIRY_MS)


def test_in_sync_lists_the_primary_and_backups_that_play_their_role() -> None:
    t = tier(catalog_view(backups=("c2",)))
    t.alive_at(10, "c1", "c3")
    t.lease("c2", 10, status=t.status("c2", epoch=0))
    assert t.views.in_sync("catalog", 10) == ["c1"]
    t.lease("c2", 11)
    assert t.views.in_sync("catalog", 11) == ["c1", "c2"]


# ---------------------------------------------------------------- membership (admin)


def test_leaving_replica_is_refused_leases_and_dropped_once_expired() -> None:
    t = tier()
    t.alive_at(AWAKE_MS, "c1", "c2", "c3")
    t.views.leaving.add("c3")
    assert t.lease("c3", AWAKE_MS + 500) == (False, None)
    t.alive_at(AWAKE_MS + 500, "c1", "c2")
    assert t.tick(AWAKE_MS + EXPIRY_MS - 1) is None
    dropped = t.tick(AWAKE_MS + EXPIRY_MS)
    assert dropped is not None
    assert dropped.backups == ("c2",)


def test_added_member_catches_up_and_joins_when_the_primary_names_it() -> None:
    t = tier()
    c4 = Member(name="c4", url="http://c4")
    added = t.views.add_member("catalog", c4)
    assert (added.epoch, added.primary, added.backups) == (2, "c1", ("c2", "c3"))
    assert added.members == (*MEMBERS, c4)
    t.views.install(added)
    assert t.views.state("catalog", "c4", 10) == "down"
    t.alive_at(10, "c4")
    assert t.views.state("catalog", "c4", 10) == "catching_up"
    granted, joined = t.lease("c1", 20, join=("c4",))
    assert granted
    assert joined is not None
    assert joined.backups == ("c2", "c3", "c4")


def test_removed_member_is_forgotten() -> None:
    t = tier(catalog_view(backups=("c2",)))
    removed = t.views.remove_member("catalog", "c3")
    assert (removed.epoch, removed.backups) == (2, ("c2",))
    assert [m.name for m in removed.members] == ["c1", "c2"]
    t.views.install(removed)
    assert t.lease("c3", 10) == (False, None)


def test_switchover_makes_the_backup_primary_and_keeps_an_alive_old_primary_as_backup() -> None:
    t = tier()
    t.alive_at(10, "c1", "c2", "c3")
    moved = t.views.switchover("catalog", "c2", 20)
    assert (moved.epoch, moved.primary, moved.backups) == (2, "c2", ("c3", "c1"))


def test_switchover_leaves_out_an_old_primary_whose_lease_expired() -> None:
    t = tier()
    t.alive_at(10, "c1")
    t.alive_at(500, "c2", "c3")
    moved = t.views.switchover("catalog", "c2", 10 + EXPIRY_MS)
    assert (moved.primary, moved.backups) == ("c2", ("c3",))


def test_switchover_right_after_a_restart_keeps_the_old_primary_it_has_not_heard_yet() -> None:
    """Found by the simulator (seed 40905): a front end restarted less than a lease ago has
    not heard the old primary, whose lease (granted by the dead front end) may still run;
    leaving it out would let two primaries serve."""
    booted_ms = 5000
    t = tier(booted_ms=booted_ms)
    t.alive_at(booted_ms + 1, "c2", "c3")  # c1, the primary, has not asked this front end yet
    moved = t.views.switchover("catalog", "c2", booted_ms + EXPIRY_MS - 1)
    assert (moved.primary, moved.backups) == ("c2", ("c3", "c1"))
    later = tier(booted_ms=booted_ms)
    later.alive_at(booted_ms + EXPIRY_MS, "c2", "c3")
    moved = later.views.switchover("catalog", "c2", booted_ms + EXPIRY_MS)
    assert (moved.primary, moved.backups) == ("c2", ("c3",))  # its lease has expired


def test_best_backup_is_the_in_sync_backup_with_the_highest_position() -> None:
    t = tier()
    assert t.views.best_backup("catalog", 10) is None
    t.lease("c2", 10, status=t.status("c2", last=(1, 5)))
    t.lease("c3", 10, status=t.status("c3", last=(1, 7)))
    assert t.views.best_backup("catalog", 10) == "c3"
    t.lease("c3", 11, status=t.status("c3", epoch=0, last=(1, 9)))  # not in sync
    assert t.views.best_backup("catalog", 11) == "c2"


# ---------------------------------------------------------------- the balancer


def test_round_robin_rotates_healthy_replicas_and_tries_others_last() -> None:
    balancer = RoundRobin()
    first = balancer.order(["a", "b"], ["c"])
    second = balancer.order(["a", "b"], ["c"])
    assert {first[0], second[0]} == {"a", "b"}
    assert first[-1] == second[-1] == "c"
    assert balancer.order([], ["c"]) == ["c"]
