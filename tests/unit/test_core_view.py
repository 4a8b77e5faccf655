"""The pure view manager and balancer."""

from __future__ import annotations

from bazar.core.balancer import RoundRobin
from bazar.core.view import ViewManager, initial_view
from bazar.wire import Member, ReplicaStatus

MEMBERS = (Member(name="catalog-1", url="http://a"), Member(name="catalog-2", url="http://b"))


def status(
    name: str, *, boot_epoch: int = 0, epoch: int = 1, role: str = "backup"
) -> ReplicaStatus:
    return ReplicaStatus(
        name=name,
        tier="catalog",
        pid=7,
        incarnation="x",
        epoch=epoch,
        boot_epoch=boot_epoch,
        role=role,  # type: ignore[arg-type]
        last_seq=0,
        last_epoch=0,
        commit_seq=0,
    )


def manager() -> ViewManager:
    return ViewManager({"catalog": initial_view("catalog", MEMBERS)})


def test_initial_view_names_the_first_replica_primary_at_epoch_1() -> None:
    view = initial_view("catalog", MEMBERS)
    assert (view.epoch, view.primary, view.backups) == (1, "catalog-1", ("catalog-2",))


def test_restarted_primary_gets_a_new_epoch() -> None:
    views = manager()
    assert views.on_status("catalog", status("catalog-1", role="primary"), 0) is None
    new = views.on_status("catalog", status("catalog-1", boot_epoch=1, role="none"), 10)
    assert new is not None
    assert (new.epoch, new.primary, new.backups) == (2, "catalog-1", ("catalog-2",))
    views.install(new)
    assert views.views["catalog"].epoch == 2


def test_restarted_backup_does_not_change_the_view() -> None:
    views = manager()
    assert views.on_status("catalog", status("catalog-2", boot_epoch=1), 0) is None


def test_state_follows_heartbeats() -> None:
    views = manager()
    assert views.state("catalog", "catalog-2") == "down"
    views.on_status("catalog", status("catalog-2"), 0)
    assert views.state("catalog", "catalog-2") == "in_sync"
    views.on_failure("catalog", "catalog-2", definite=True)
    assert views.state("catalog", "catalog-2") == "down"


def test_a_replica_that_times_out_is_down_only_after_three_misses_in_a_row() -> None:
    views = manager()
    views.on_status("catalog", status("catalog-2"), 0)
    views.on_failure("catalog", "catalog-2", definite=False)
    views.on_failure("catalog", "catalog-2", definite=False)
    assert views.state("catalog", "catalog-2") == "in_sync"
    views.on_status("catalog", status("catalog-2"), 1)  # an answer resets the count
    for _ in range(3):
        views.on_failure("catalog", "catalog-2", definite=False)
    assert views.state("catalog", "catalog-2") == "down"


def test_primary_up_needs_a_serving_primary_of_the_current_epoch() -> None:
    views = manager()
    assert not views.primary_up("catalog")
    views.on_status("catalog", status("catalog-1", role="none"), 0)
    assert not views.primary_up("catalog")
    views.on_status("catalog", status("catalog-1", role="primary"), 0)
    assert views.primary_up("catalog")


def test_round_robin_rotates_healthy_replicas_and_tries_others_last() -> None:
    balancer = RoundRobin()
    first = balancer.order(["a", "b"], ["c"])
    second = balancer.order(["a", "b"], ["c"])
    assert {first[0], second[0]} == {"a", "b"}
    assert first[-1] == second[-1] == "c"
    assert balancer.order([], ["c"]) == ["c"]
