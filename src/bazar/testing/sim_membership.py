"""The simulator's operator: membership changes under load and faults, decided by the
production view manager (`ViewManager.add_member`, `switchover`, `remove_member` and its
`leaving` set), sequenced as `frontend/membership.py` sequences them.

- add: a new replica (a fresh store) starts and the view lists it as a member; the primary
  catches it up and joins it (replica rule 8);
- switchover: the view naming the best in-sync backup primary, the old one a backup;
- remove: a member that is not the primary (a primary is first switched over) is granted no
  more leases, drops out of the view like a dead one once its lease has expired, then leaves
  the members and stops for good.

Why: "membership changes lose nothing" (docs/contract.md §3.9) is a property of those views
meeting every fault the nemesis draws (a crash of the new primary during a switchover, a
partition of the member being removed); only runs of both together can break it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from bazar.testing.sim_frontend import FrontendNode
from bazar.testing.sim_network import Loop
from bazar.testing.sim_replica import ReplicaNode
from bazar.wire import Member

MEMBERS_MAX = 5  # per tier (`[limits] replicas_max` is 9; a small world stays small)
POLL_MS = 20


class Operator:
    """Membership changes every `interval_ms` (drawn) until `end_ms`, one at a time."""

    def __init__(
        self,
        *,
        loop: Loop,
        rng: random.Random,
        frontend: FrontendNode,
        replicas: dict[str, ReplicaNode],
        new_replica: Callable[[str, str], ReplicaNode],
        trace: Callable[[str], None],
        interval_ms: int,
        end_ms: int,
    ) -> None:
        self.loop = loop
        self.rng = rng
        self.frontend = frontend
        self.replicas = replicas
        self.new_replica = new_replica
        self.trace = trace
        self.interval_ms = interval_ms
        self.end_ms = end_ms
        self.busy: int | None = None  # the front end's incarnation while a change runs

    @property
    def running(self) -> bool:
        """A change is under way (one the front end's crash ended does not count)."""
        host = self.frontend.host
        return self.busy is not None and self.busy == host.incarnation and host.up

    def start(self, at_ms: int) -> None:
        self.loop.at(at_ms, None, None, self._next)

    def _next(self) -> None:
        if self.loop.now_ms >= self.end_ms:
            return
        self.loop.after(self.rng.randint(1, 2 * self.interval_ms), None, None, self._next)
        host = self.frontend.host
        if self.busy is not None and self.busy != host.incarnation:
            self.busy = None  # the front end restarted: the change did not finish
        if self.busy is not None or not host.up or host.paused:
            return
        tier = self.rng.choice(sorted(self.frontend.stored))
        kind = self.rng.choice(("add", "switchover", "remove"))
        {"add": self._add, "switchover": self._switchover, "remove": self._remove}[kind](tier)

    # ---------------------------------------------------------------- the three changes

    def _add(self, tier: str) -> None:
        manager = self.frontend.live()
        view = manager.views[tier]
        if len(view.members) >= MEMBERS_MAX:
            return
        prefix = "r" if tier == "catalog" else "o"
        used = {name for name in self.replicas if name.startswith(prefix)}
        name = next(f"{prefix}{n}" for n in range(1, 100) if f"{prefix}{n}" not in used)
        node = self.new_replica(tier, name)
        self.replicas[name] = node
        node.boot()
        self.frontend.install(manager.add_member(tier, Member(name=name, url=f"sim://{name}")))
        self.trace(f"op=add tier={tier} node={name}")

    def _switchover(self, tier: str) -> bool:
        """`Membership._switchover` (writes held meanwhile there; here an attempt at the old
        primary is given up as after any failover, and retried under its key)."""
        manager = self.frontend.live()
        now = self.frontend.now()
        target = manager.best_backup(tier, now)
        if target is None:
            return False
        self.frontend.install(manager.switchover(tier, target, now))
        self.trace(f"op=switchover tier={tier} primary={target}")
        return True

    def _remove(self, tier: str) -> None:
        """`Membership.remove`: never the last in-sync replica."""
        manager = self.frontend.live()
        view = manager.views[tier]
        now = self.frontend.now()
        name = self.rng.choice([member.name for member in view.members])
        others = [n for n in manager.in_sync(tier, now) if n != name]
        if not others:
            return
        if name == view.primary and not self._switchover(tier):
            return
        manager.leaving.add(name)
        self.busy = self.frontend.host.incarnation
        self.trace(f"op=remove tier={tier} node={name}")
        self._wait_out(tier, name)

    def _wait_out(self, tier: str, name: str) -> None:
        """`Membership._leave`: once its lease has expired the view drops it from the
        backups (rule 3); then it leaves the members, and stops. A step of the front end's
        (held while it is paused, gone if it crashes)."""
        frontend = self.frontend
        manager = frontend.live()
        view = manager.views[tier]
        if name in (view.primary, *view.backups):
            host = frontend.host
            self.loop.after(
                POLL_MS, host.name, host.incarnation, lambda: self._wait_out(tier, name)
            )
            return
        frontend.install(manager.remove_member(tier, name))
        manager.leaving.discard(name)
        node = self.replicas[name]
        node.retired = True
        if node.host.up:
            node.crash()
        self.busy = None
        self.trace(f"op=removed tier={tier} node={name}")
