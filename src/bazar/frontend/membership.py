"""Membership at runtime, the front end's admin routes (docs/contract.md §2, §3.9): add a
replica, remove one, and move the primary role (switchover), each losing no acknowledged
write and failing no read or write.

The decisions are the view manager's (`frontend/views.py`); this adapter sequences them:
- add: refused while the service has `replicas_max` members; else the new member is written
  to the cluster file (`bazar up` starts the processes it lists; a replica started elsewhere
  is registered by URL, unmanaged) and to a new view, as catching up; the primary catches it
  up and joins it (replica rule 8).
- switchover: writes through the front end are held (never 503'd) and drained, the view
  naming the new primary is installed, then writes resume on it.
- remove: the replica is granted no more leases, so it drops out of the view like a dead one
  once its lease has expired; then it leaves the members and the cluster file (`bazar up`
  stops it).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from bazar.clock import monotonic_ms
from bazar.config import (
    REPLICATED_TIERS,
    Cluster,
    Limits,
    Node,
    ReplicatedTier,
    Secrets,
    free_port,
    load_cluster,
    with_replica,
    without_replica,
    write_cluster,
)
from bazar.errors import (
    InvalidRequest,
    LastReplica,
    NotFound,
    NotInSync,
    TooManyReplicas,
    Unavailable,
)
from bazar.frontend.views import ViewManager
from bazar.http_app import decode_body, json_response, require_token
from bazar.wire import (
    Member,
    ReplicaAdd,
    ReplicaData,
    ReplicaHealth,
    ReplicaHealthData,
    ReplicaInfo,
    Switchover,
    TierData,
    TierInfo,
    View,
)


class Frontend(Protocol):
    """What membership changes need of the front end (`service.Frontend`)."""

    cluster: Cluster
    secrets: Secrets
    limits: Limits
    views: ViewManager

    async def change(self, compute: Callable[[], View]) -> View: ...

    def holding_writes(self, tiers: tuple[str, ...]) -> AbstractAsyncContextManager[None]: ...

    def replica_info(self, tier: str, name: str) -> ReplicaInfo: ...

    def tier_info(self, tier: str) -> TierInfo: ...


log = logging.getLogger("bazar.membership")

POLL_S = 0.05
HEALTH_TIMEOUT_S = 2.0


class Membership:
    def __init__(self, frontend: Frontend, cluster_file: Path | None) -> None:
        self.frontend = frontend
        self.cluster_file = cluster_file
        self.limits = frontend.limits
        self._lock = asyncio.Lock()

    # ---------------------------------------------------------------- routes

    async def add(self, request: Request) -> Response:
        require_token(request, self.frontend.secrets.admin_token, "admin token")
        body = await decode_body(request, ReplicaAdd, self.limits.request_bytes_max)
        async with self._lock:
            self._check_room(body.service)
            name = None if body.url is None else await self._name_at(body.service, body.url)
            node = self._new_node(body.service, body.url, name)
            if node.managed and self.cluster_file is None:
                raise Unavailable("this front end has no cluster file to start a replica from")
            self._write_cluster_file(lambda cluster: with_replica(cluster, node))
            views = self.frontend.views
            member = Member(name=node.name, url=node.url)
            await self.frontend.change(lambda: views.add_member(node.tier, member))
        log.info("transition=replica_added tier=%s node=%s url=%s", node.tier, node.name, node.url)
        info = self.frontend.replica_info(node.tier, node.name)
        # Not heard from yet: it is starting, to catch up (docs/contract.md §2).
        if info.state == "down":
            info = msgspec.structs.replace(info, state="catching_up")
        return json_response(ReplicaData(data=info), 202)

    async def remove(self, request: Request) -> Response:
        require_token(request, self.frontend.secrets.admin_token, "admin token")
        name = request.path_params["name"]
        async with self._lock:
            tier = self._tier_of(name)
            views = self.frontend.views
            view = views.views[tier]
            others = [n for n in views.in_sync(tier, monotonic_ms()) if n != name]
            if name in (view.primary, *view.backups) and not others:
                raise LastReplica(f"{name} is the only in-sync replica of {tier}")
            if name == view.primary:
                await self._switchover(tier, None)
            url = self._url_of(tier, name)
            await self._leave(tier, name)
            self._write_cluster_file(lambda cluster: without_replica(cluster, name))
            await self._stopped(url, name)
        log.info("transition=replica_removed tier=%s node=%s", tier, name)
        return json_response(TierData(data=self.frontend.tier_info(tier)))

    async def switchover(self, request: Request) -> Response:
        require_token(request, self.frontend.secrets.admin_token, "admin token")
        body = await decode_body(request, Switchover, self.limits.request_bytes_max)
        async with self._lock:
            await self._switchover(body.service, body.to)
        return json_response(TierData(data=self.frontend.tier_info(body.service)))

    # ---------------------------------------------------------------- steps

    async def _switchover(self, tier: ReplicatedTier, to: str | None) -> None:
        """Raises: NotFound, NotInSync, Unavailable."""
        views = self.frontend.views
        view = views.views[tier]
        if to is not None and to not in {m.name for m in view.members}:
            raise NotFound(f"{tier} has no replica {to}")
        now = monotonic_ms()
        target = views.best_backup(tier, now) if to is None else to
        if target is None or target not in views.in_sync(tier, now) or target == view.primary:
            raise NotInSync(f"{target or 'no replica'} is not an in-sync backup of {tier}")
        held = ("catalog", "order") if tier == "catalog" else (tier,)  # purchases sell

        def switched() -> View:
            """Raises: NotInSync (the target left the in-sync set while writes drained)."""
            now = monotonic_ms()
            if target not in views.in_sync(tier, now) or target not in views.views[tier].backups:
                raise NotInSync(f"{target} is no longer an in-sync backup of {tier}")
            return views.switchover(tier, target, now)

        async with self.frontend.holding_writes(held):
            await self.frontend.change(switched)
        await self._wait(
            lambda: views.state(tier, target, monotonic_ms()) == "in_sync",
            f"{target} serving as the {tier} primary",
        )
        log.info("transition=switchover tier=%s primary=%s", tier, target)

    async def _leave(self, tier: ReplicatedTier, name: str) -> None:
        views = self.frontend.views
        views.leaving.add(name)
        try:
            await self._wait(
                lambda: name not in (views.views[tier].primary, *views.views[tier].backups),
                f"{name} out of the in-sync set (its lease expired)",
            )

            def removed() -> View:
                """Raises: Unavailable (a view made it a backup again meanwhile)."""
                view = views.views[tier]
                if name in (view.primary, *view.backups):
                    raise Unavailable(f"{name} is in the {tier} view again; retry")
                return views.remove_member(tier, name)

            await self.frontend.change(removed)
        finally:
            views.leaving.discard(name)

    async def _wait(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.limits.membership_timeout_ms / 1000
        while not predicate():
            if time.monotonic() > deadline:
                raise Unavailable(f"not done in time: {what}")
            await asyncio.sleep(POLL_S)

    async def _stopped(self, url: str, name: str) -> None:
        """Wait until a replica that `bazar up` ran has stopped listening."""
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        deadline = time.monotonic() + self.limits.membership_timeout_ms / 1000
        while await asyncio.to_thread(_listening, host, port):
            if time.monotonic() > deadline:
                log.warning("transition=replica_still_running node=%s", name)
                return
            await asyncio.sleep(POLL_S)

    def _check_room(self, tier: ReplicatedTier) -> None:
        """Before anything is started or written: the service has room for one more.

        Raises: TooManyReplicas.
        """
        members = len(self.frontend.views.views[tier].members)
        if members >= self.limits.replicas_max:
            raise TooManyReplicas(
                f"{tier} has {members} replicas, the most it may have "
                f"(limits.replicas_max = {self.limits.replicas_max})"
            )

    # ---------------------------------------------------------------- names and files

    def _tier_of(self, name: str) -> ReplicatedTier:
        for tier in REPLICATED_TIERS:
            if name in {m.name for m in self.frontend.views.views[tier].members}:
                return tier
        raise NotFound(f"no replica {name}")

    def _url_of(self, tier: ReplicatedTier, name: str) -> str:
        return self.frontend.views.views[tier].url_of(name)

    async def _name_at(self, tier: ReplicatedTier, url: str) -> str:
        """The name a replica started elsewhere runs under (its `/health`, no secret).

        Raises: InvalidRequest (unreachable, not a replica of `tier`, or a name in use)."""
        if not url.startswith("http://"):
            raise InvalidRequest("url must be http://HOST:PORT")
        try:
            health = await asyncio.to_thread(_health_of, url)
        except (OSError, ValueError, msgspec.DecodeError) as error:
            raise InvalidRequest(f"no replica answers at {url}: {error}") from None
        used = {m.name for t in REPLICATED_TIERS for m in self.frontend.views.views[t].members}
        if not health.name.startswith(f"{tier}-") or health.name in used:
            raise InvalidRequest(f"the replica at {url} is {health.name}: not a new {tier}")
        return health.name

    def _new_node(self, tier: ReplicatedTier, url: str | None, name: str | None) -> Node:
        """Names continue the service's numbering and are not reused while a data directory
        of that name exists (docs/contract.md §8); a replica started elsewhere keeps its own."""
        frontend = self.frontend
        data_dir = Path(frontend.cluster.data_dir)
        used = {m.name for t in REPLICATED_TIERS for m in frontend.views.views[t].members}
        number = 1
        while f"{tier}-{number}" in used or (data_dir / f"{tier}-{number}").exists():
            number += 1
        name = name or f"{tier}-{number}"
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname or parts.port is None:
                raise InvalidRequest("url must be http://HOST:PORT")
            host, port = parts.hostname, parts.port
            return Node(name=name, tier=tier, host=host, port=port, managed=False)
        host = frontend.cluster.frontend.host
        taken = {node.port for node in self._cluster_nodes()}
        port = free_port(host, frontend.cluster.frontend.port, taken)
        return Node(name=name, tier=tier, host=host, port=port)

    def _cluster_nodes(self) -> list[Node]:
        cluster = self.frontend.cluster
        if self.cluster_file is not None and self.cluster_file.exists():
            cluster = load_cluster(self.cluster_file)
        return list(cluster.nodes())

    def _write_cluster_file(self, change: Callable[[Cluster], Cluster]) -> None:
        if self.cluster_file is None:
            return
        cluster = change(load_cluster(self.cluster_file))
        write_cluster(cluster, self.cluster_file)
        self.frontend.cluster = cluster


def _health_of(url: str) -> ReplicaHealth:
    """`GET {url}/health` of a replica: 200 or 503, both with its name (Patroni's checks).

    Raises: OSError (unreachable), msgspec.DecodeError (not a replica)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        with error:
            body = error.read()
    return msgspec.json.decode(body, type=ReplicaHealthData).data


def _listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0
