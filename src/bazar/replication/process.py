"""What every replica process has, whatever its tier: the replication routes (append,
snapshot, commit point, digest), the health checks and metrics (both without the secret),
the secret check, the store and runtime lifecycle, and decoding of internal request bodies.
The catalog and order services add their own routes on top.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from bazar.clock import monotonic_ms
from bazar.config import Cluster, Node, Secrets
from bazar.errors import InvalidRequest
from bazar.http_app import build_app, decode_body, json_response, read_body, require_token
from bazar.replication.metrics import ReplicaMetrics
from bazar.replication.replica import Notify
from bazar.replication.runtime import SNAPSHOT_HEADER, ReplicaRuntime
from bazar.replication.storage import Machine, Store
from bazar.transport import Transport
from bazar.wire import (
    Append,
    Digest,
    Isolation,
    ReplicaHealth,
    ReplicaHealthData,
    Snapshot,
)

T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]

log = logging.getLogger("bazar.replica")


def check_append(message: Append, tables: Mapping[str, str]) -> None:
    """A peer's Append is input like any other: the core asserts on its own positions, so
    an Append whose entries do not follow `prev_seq` in order, with epochs that never go
    back and none above the message's, or that writes a table this tier does not have, is
    refused before it reaches the core.

    Raises: InvalidRequest."""
    if message.epoch < 1 or not message.primary:
        raise InvalidRequest("an Append names its epoch (>= 1) and its primary")
    if min(message.prev_seq, message.prev_epoch, message.commit_seq) < 0:
        raise InvalidRequest("an Append's positions are never negative")
    if message.prev_epoch > message.epoch:
        raise InvalidRequest("an Append's previous entry is from a later epoch than itself")
    epoch = message.prev_epoch
    for offset, entry in enumerate(message.entries, start=1):
        if entry.seq != message.prev_seq + offset:
            raise InvalidRequest("an Append's entries follow prev_seq, one seq each")
        if not max(epoch, 1) <= entry.epoch <= message.epoch:
            raise InvalidRequest("an Append's epochs never go back nor pass its own")
        epoch = entry.epoch
        if any(change.table not in tables for change in entry.changes):
            raise InvalidRequest("an Append writes a table this tier does not have")


class ReplicaProcess:
    """The parts of one replica process, built by `cli.py` and served by uvicorn."""

    def __init__(
        self,
        *,
        cluster: Cluster,
        node: Node,
        secrets: Secrets,
        schema: str,
        machine: Machine[Any, Any],
        notify: Notify | None = None,
    ) -> None:
        self.cluster = cluster
        self.node = node
        self.secret = secrets.cluster_secret
        self.limits = cluster.limits
        path = Path(cluster.data_dir) / node.name / f"{node.tier}.sqlite3"
        self.store = Store(path, schema, machine.tables, machine)
        self.transport = Transport(self.secret)
        self.metrics = ReplicaMetrics(cluster.limits, node.tier, node.name)
        self.store.timing = self.metrics.observe_fsync
        self.runtime: ReplicaRuntime[Any, Any] = ReplicaRuntime(
            cluster=cluster,
            node=node,
            store=self.store,
            transport=self.transport,
            metrics=self.metrics,
            notify=notify,
        )
        self.metrics.watch(self.runtime.core, self.runtime.queued, monotonic_ms)
        self.background: list[Callable[[], Awaitable[None]]] = []

    def internal(self, handler: Handler) -> Handler:
        """Wrap a handler so that it requires the cluster secret."""

        async def guarded(request: Request) -> Response:
            require_token(request, self.secret, "cluster secret")
            return await handler(request)

        return guarded

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/internal/append", self.internal(self._append), methods=["POST"]),
            Route("/internal/commit", self.internal(self._commit), methods=["GET"]),
            Route("/internal/snapshot", self.internal(self._snapshot), methods=["POST"]),
            Route("/internal/digest", self.internal(self._digest), methods=["GET"]),
            *(
                [Route("/internal/test/isolate", self.internal(self._isolate), methods=["POST"])]
                if self.cluster.test_hooks
                else []
            ),
            Route("/health", self._health, methods=["GET"]),
            Route("/primary", self._health, methods=["GET"]),
            Route("/replica", self._health, methods=["GET"]),
            # No secret (docs/contract.md §4).
            Route("/metrics", self.metrics.endpoint, methods=["GET"]),
        ]

    async def _append(self, request: Request) -> Response:
        message = await decode_body(request, Append, self.limits.append_bytes_max)
        check_append(message, self.store.tables)
        return json_response(await self.runtime.on_append(message))

    async def _snapshot(self, request: Request) -> Response:
        try:
            header = msgspec.json.decode(
                request.headers.get(SNAPSHOT_HEADER, "").encode(), type=Snapshot
            )
        except msgspec.DecodeError as error:
            raise InvalidRequest(f"bad {SNAPSHOT_HEADER} header: {error}") from None
        data = await read_body(request, self.limits.append_bytes_max)
        return json_response(await self.runtime.on_snapshot(header, data))

    async def _isolate(self, request: Request) -> Response:
        isolation = await decode_body(request, Isolation, self.limits.request_bytes_max)
        self.runtime.isolated_from_frontend = isolation.frontend
        log.warning("transition=test_isolation frontend=%s", isolation.frontend)
        return json_response(isolation)

    async def _health(self, request: Request) -> Response:
        """Health checks in Patroni's manner, for an external load balancer (no secret):
        `/health` while serving in the current view, `/primary` on the primary only,
        `/replica` on an in-sync backup only."""
        core = self.runtime.core
        serving = core.serving(monotonic_ms())
        health = ReplicaHealth(
            name=core.name,
            role=core.role,
            serving=serving,
            epoch=core.epoch,
            last_seq=core.last_seq,
            commit_seq=core.commit_seq,
        )
        wanted = {"/health": None, "/primary": "primary", "/replica": "backup"}
        role = wanted[request.url.path.rstrip("/") or "/health"]
        ok = serving and (role is None or core.role == role)
        return json_response(ReplicaHealthData(data=health), 200 if ok else 503)

    async def _commit(self, request: Request) -> Response:
        return json_response(self.runtime.commit_point_for_backups())

    async def _digest(self, request: Request) -> Response:
        """For tests and operators: a hash of every replicated table (idempotency records
        included) and the log position, to check that replicas are identical."""
        return json_response(
            Digest(
                last_seq=self.runtime.core.last_seq,
                commit_seq=self.runtime.core.commit_seq,
                tables=self.store.digest(),
            )
        )

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.transport.start()
        await self.runtime.start()
        for start in self.background:
            self.runtime.spawn(start(), "background")
        log.info("transition=start tier=%s node=%s", self.node.tier, self.node.name)
        try:
            yield
        finally:
            await self.runtime.stop()
            await self.transport.close()
            self.store.close()

    def app(self, routes: Sequence[BaseRoute]) -> ASGIApp:
        return build_app(
            [*self.routes(), *routes], lifespan=self.lifespan, measure=self.metrics.middleware
        )
