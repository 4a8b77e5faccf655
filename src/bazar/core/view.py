"""The view manager (configuration manager) of both replicated tiers, without I/O.

The front end owns one `ViewManager`. It numbers views `(epoch, primary, backups)`; the
runtime persists a new view (fsync) before announcing it, so epochs never go backwards and
only the front end creates them: that is what makes split brain impossible.

Everything that changes a view lives here. Current rules:
- The first view of a tier (epoch 1) names its first replica primary and the rest backups.
- A primary that restarted may not reuse an epoch it has seen (replica rule 4): when the
  primary reports `boot_epoch >= epoch`, the view is re-issued with epoch + 1.
- Heartbeats record each replica's health for `/cluster` and `/health`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bazar.wire import Member, ReplicaStatus, View

State = Literal["in_sync", "catching_up", "down"]
MISSES_MAX = 3


@dataclass(slots=True)
class Health:
    """The last thing a heartbeat told us about one replica."""

    status: ReplicaStatus | None = None
    up: bool = False
    last_ok_ms: int = 0
    misses: int = 0


def initial_view(tier: Literal["catalog", "order"], members: tuple[Member, ...]) -> View:
    assert members
    return View(
        tier=tier,
        epoch=1,
        primary=members[0].name,
        backups=tuple(member.name for member in members[1:]),
        members=members,
    )


@dataclass(slots=True)
class ViewManager:
    views: dict[str, View]
    health: dict[str, dict[str, Health]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for tier, view in self.views.items():
            assert view.tier == tier
            assert view.epoch >= 1
            self.health.setdefault(tier, {m.name: Health() for m in view.members})

    def on_status(self, tier: str, status: ReplicaStatus, now_ms: int) -> View | None:
        """Record a heartbeat answer; returns a new view to persist and announce, if any."""
        view = self.views[tier]
        health = self.health[tier][status.name]
        health.status = status
        health.up = True
        health.misses = 0
        health.last_ok_ms = now_ms
        if status.name == view.primary and status.boot_epoch >= view.epoch:
            return self._next_view(view)
        return None

    def on_failure(self, tier: str, name: str, *, definite: bool) -> None:
        """A heartbeat or read failed. A refused connection is down at once; a timeout only
        after `MISSES_MAX` in a row (a busy replica is not a dead one)."""
        health = self.health[tier][name]
        health.misses += 1
        if definite or health.misses >= MISSES_MAX:
            health.up = False

    def _next_view(self, view: View) -> View:
        new = View(
            tier=view.tier,
            epoch=view.epoch + 1,
            primary=view.primary,
            backups=view.backups,
            members=view.members,
        )
        assert new.epoch > view.epoch
        return new

    def install(self, view: View) -> None:
        """The view is persisted: make it current."""
        assert view.epoch > self.views[view.tier].epoch
        self.views[view.tier] = view

    def state(self, tier: str, name: str) -> State:
        """`in_sync`: up and playing the role the view gives it; `catching_up`: up but not
        (yet) in that role, e.g. a restarted primary waiting for its new epoch."""
        view = self.views[tier]
        health = self.health[tier][name]
        status = health.status
        if not health.up or status is None:
            return "down"
        expected = "primary" if name == view.primary else "backup"
        if name != view.primary and name not in view.backups:
            return "catching_up"
        if status.epoch != view.epoch or status.role != expected:
            return "catching_up"
        return "in_sync"

    def primary_up(self, tier: str) -> bool:
        return self.state(tier, self.views[tier].primary) == "in_sync"

    def writable(self, tier: str) -> bool:
        """Writes commit only when every member of the view has staged them."""
        view = self.views[tier]
        return all(self.state(tier, name) == "in_sync" for name in (view.primary, *view.backups))
