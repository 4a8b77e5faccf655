"""Configuration: the one place that reads the environment, cluster files and secret files.

Rules: every limit and timeout of the system is a named field here (units last); `cli.py`
builds a `Cluster` once and passes it down. Nothing else reads `os.environ` or `sys.argv`.
"""

from __future__ import annotations

import os
import secrets
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec

Tier = Literal["frontend", "catalog", "order"]
ReplicatedTier = Literal["catalog", "order"]
REPLICATED_TIERS: tuple[ReplicatedTier, ...] = ("catalog", "order")
LogFormat = Literal["text", "json"]  # `--log-format` (bazar.logs)
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

DEFAULT_FRONTEND_PORT = 8002
DEFAULT_PORTS: dict[ReplicatedTier, tuple[int, ...]] = {
    "catalog": (8003, 8004),
    "order": (8001, 8005),
}

CLUSTER_SECRET_ENV = "BAZAR_CLUSTER_SECRET"
ADMIN_TOKEN_ENV = "BAZAR_ADMIN_TOKEN"
CLUSTER_SECRET_FILE = "cluster.secret"
ADMIN_TOKEN_FILE = "admin.token"
CLUSTER_FILE = "cluster.toml"


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every bound and timeout, in one place (TigerStyle: put a limit on everything)."""

    request_bytes_max: int = 64 * 1024
    quantity_max: int = 1000
    topic_chars_max: int = 200
    idempotency_key_chars_max: int = 255
    stock_delta_abs_max: int = 10**9
    page_limit_max: int = 1000
    page_limit_default: int = 100
    read_timeout_ms: int = 500
    write_timeout_ms: int = 5000
    sell_timeout_ms: int = 4000
    replicate_timeout_ms: int = 500
    replicate_retry_ms: int = 50
    commit_notice_delay_ms: int = 2
    batch_commands_max: int = 512
    calls_in_flight_max: int = 1  # batched calls out at once per hop: 2 pipelines (results.md)
    inflight_commands_max: int = 10_000
    recovery_interval_ms: int = 1000
    test_read_delay_ms_max: int = 10_000
    catch_up_entries_max: int = 64
    append_bytes_max: int = 64 * 1024 * 1024
    log_file_bytes_max: int = 10 * 1024 * 1024
    """A process's log file is rotated past this size (`<name>.log` -> `<name>.log.1`)."""
    log_files_kept: int = 5
    """Rotated files kept besides the current one: at most 60 MiB of logs per process."""
    invalidate_retry_ms_max: int = 1000
    retry_after_s: int = 1
    lease_ms: int = 1000
    """How long a grant lets a replica serve, from when it asked (replica's clock)."""
    lease_renew_ms: int = 100
    lease_margin_ms: int = 100
    """Clock-rate drift and scheduling slack the front end adds before it drops a replica."""
    lease_timeout_ms: int = 300
    tick_ms: int = 20
    """A replica's timer step (lease renewals, retries, commit notices). Each wake-up costs
    CPU even when idle: 10 ms cost each replica 3.2 % of a core doing nothing, 20 ms 2.2 %."""
    view_tick_ms: int = 20
    commit_check_timeout_ms: int = 200
    """A backup asking the primary whether a staged write committed: below
    `read_timeout_ms`, so the front end hears the backup's refusal before it gives up."""
    write_retry_deadline_ms: int = 3000
    """How long the front end retries a write that a primary refused or lost in a failover."""
    read_deadline_ms: int = 4000
    """How long the front end keeps retrying a read over the replicas (through a failover)."""
    membership_timeout_ms: int = 10_000
    replicas_max: int = 9
    """Replicas of one service at most, whatever their state: `POST /admin/replicas` beyond
    it is refused (409 `too_many_replicas`) before anything is started, and a cluster file
    that lists more is invalid. Each replica costs the primary a stream of Appends and every
    write a wait for one more backup."""
    log_entries_max: int = 10_000
    """Committed entries a replica keeps; a replica that needs older ones gets a snapshot."""
    snapshot_timeout_ms: int = 10_000
    header_timeout_s: int = 5
    """A connection must send a whole request head within this long of being opened or of its
    last response (so an idle keep-alive connection too), else it is closed without an answer.
    uvicorn's own idle timeout stopped at a head's first byte: half heads were held forever."""
    head_bytes_max: int = 64 * 1024
    """Bytes a connection may send while its request head (request line and headers) is not
    yet whole; past them it is answered 431 and closed. httptools sets no bound: one connection
    sent 329 MB of headers in 3 s. (A head that ends within the read that crosses the bound
    still passes: the bound is on memory, not an exact size.)"""
    connections_max: int = 4096
    """Open connections per process. A connection past it has its first request answered 503
    `unavailable` and is closed. Far above what the lab, the tests and the bench open (hundreds)
    and far below the open files a process may hold (raised to fit at start, `server.py`)."""
    inflight_requests_max: int = 1024
    """Requests being handled per process (cache hits included); past it a request is answered
    503 `unavailable` with Retry-After at once instead of queueing without end. Peers' requests
    (with the cluster secret) are never refused by either bound: each peer opens at most
    `transport.CONNECTIONS_MAX` connections, so they are bounded anyway."""

    def __post_init__(self) -> None:
        """Raises: ValueError (msgspec.ValidationError when loaded from a file)."""
        for name in (
            "header_timeout_s",
            "head_bytes_max",
            "connections_max",
            "inflight_requests_max",
            "replicas_max",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"limits.{name} must be at least 1, not {getattr(self, name)}")


LIMITS = Limits()
assert LIMITS.read_timeout_ms < LIMITS.write_timeout_ms
assert LIMITS.sell_timeout_ms < LIMITS.write_timeout_ms
assert LIMITS.commit_check_timeout_ms < LIMITS.read_timeout_ms
assert LIMITS.lease_renew_ms < LIMITS.lease_timeout_ms < LIMITS.lease_ms
assert LIMITS.read_deadline_ms < LIMITS.write_timeout_ms
assert LIMITS.page_limit_default <= LIMITS.page_limit_max
assert LIMITS.inflight_requests_max <= LIMITS.connections_max  # one request at a time each


class Node(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """One process of the cluster: its name (`catalog-1`), tier and address. `managed`:
    `bazar up` runs it (false for a replica started elsewhere and registered by URL)."""

    name: str
    tier: Tier
    host: str
    port: int
    managed: bool = True

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class Cluster(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """The whole deployment: who runs where, where data lives, and the limits."""

    data_dir: str
    frontend: Node
    catalog: tuple[Node, ...]
    order: tuple[Node, ...]
    catalog_file: str | None = None
    cache_enabled: bool = True
    cache_entries_max: int = 10_000
    cache_ttl_ms: int = 60_000
    test_hooks: bool = False
    # Writes are refused (503) while fewer replicas of a service are in sync
    # (docs/contract.md §4).
    min_in_sync: int = 1
    limits: Limits = LIMITS

    def __post_init__(self) -> None:
        """Raises: ValueError (msgspec.ValidationError when loaded from a file)."""
        if self.min_in_sync < 1:
            raise ValueError(f"min_in_sync must be at least 1, not {self.min_in_sync}")
        for tier in REPLICATED_TIERS:
            count = len(self.replicas(tier))
            if count > self.limits.replicas_max:
                raise ValueError(
                    f"{tier} lists {count} replicas, more than "
                    f"limits.replicas_max = {self.limits.replicas_max}"
                )

    def replicas(self, tier: ReplicatedTier) -> tuple[Node, ...]:
        return self.catalog if tier == "catalog" else self.order

    def nodes(self) -> tuple[Node, ...]:
        return (self.frontend, *self.catalog, *self.order)

    def node(self, name: str) -> Node:
        """Raises: KeyError if no process of that name is configured."""
        for node in self.nodes():
            if node.name == name:
                return node
        raise KeyError(name)

    def replica_dir(self, node: Node) -> Path:
        return Path(self.data_dir) / node.name


class Secrets(msgspec.Struct, frozen=True, kw_only=True):
    cluster_secret: str
    admin_token: str


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def plan_cluster(
    *,
    data_dir: Path,
    host: str,
    port: int,
    catalog_replicas: int,
    order_replicas: int,
    catalog_file: str | None,
    cache_enabled: bool = True,
    cache_entries_max: int = 10_000,
    cache_ttl_ms: int = 60_000,
    test_hooks: bool = False,
    read_timeout_ms: int | None = None,
    log_entries_max: int | None = None,
    min_in_sync: int = 1,
    replicas_max: int | None = None,
) -> Cluster:
    """Lay out ports: the seed's defaults on the default port, else the next free ports."""
    assert catalog_replicas >= 1
    assert order_replicas >= 1
    taken: set[int] = {port}

    def take(preferred: int | None) -> int:
        candidate = preferred if preferred is not None else port + 1
        while candidate in taken or not _port_free(host, candidate):
            candidate += 1
        taken.add(candidate)
        return candidate

    def tier_nodes(tier: ReplicatedTier, count: int) -> tuple[Node, ...]:
        defaults = DEFAULT_PORTS[tier] if port == DEFAULT_FRONTEND_PORT else ()
        nodes = []
        for index in range(count):
            preferred = defaults[index] if index < len(defaults) else None
            nodes.append(
                Node(name=f"{tier}-{index + 1}", tier=tier, host=host, port=take(preferred))
            )
        return tuple(nodes)

    return Cluster(
        data_dir=str(data_dir.resolve()),
        frontend=Node(name="frontend", tier="frontend", host=host, port=port),
        catalog=tier_nodes("catalog", catalog_replicas),
        order=tier_nodes("order", order_replicas),
        catalog_file=str(Path(catalog_file).resolve()) if catalog_file else None,
        cache_enabled=cache_enabled,
        cache_entries_max=cache_entries_max,
        cache_ttl_ms=cache_ttl_ms,
        test_hooks=test_hooks,
        min_in_sync=min_in_sync,
        limits=msgspec.structs.replace(
            LIMITS,
            read_timeout_ms=read_timeout_ms or LIMITS.read_timeout_ms,
            log_entries_max=log_entries_max or LIMITS.log_entries_max,
            replicas_max=replicas_max or LIMITS.replicas_max,
        ),
    )


def write_cluster(cluster: Cluster, path: Path) -> None:
    """Atomically: the supervisor and `bazar serve` may read it at any moment."""
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(msgspec.toml.encode(cluster))
    temporary.replace(path)


def with_replica(cluster: Cluster, node: Node) -> Cluster:
    """The cluster with `node` listed (in place of a node of the same name, if any)."""
    assert node.tier != "frontend"
    cluster = without_replica(cluster, node.name)
    if node.tier == "catalog":
        return msgspec.structs.replace(cluster, catalog=(*cluster.catalog, node))
    return msgspec.structs.replace(cluster, order=(*cluster.order, node))


def without_replica(cluster: Cluster, name: str) -> Cluster:
    return msgspec.structs.replace(
        cluster,
        catalog=tuple(node for node in cluster.catalog if node.name != name),
        order=tuple(node for node in cluster.order if node.name != name),
    )


def free_port(host: str, after: int, taken: set[int]) -> int:
    """The first port above `after` that is free on `host` and not in `taken`."""
    candidate = after + 1
    while candidate in taken or not _port_free(host, candidate):
        candidate += 1
    return candidate


def load_cluster(path: Path) -> Cluster:
    """Raises: msgspec.ValidationError or tomllib.TOMLDecodeError for a bad cluster file."""
    return msgspec.convert(tomllib.loads(path.read_text()), Cluster)


def _secret_from(environ: Mapping[str, str], variable: str, path: Path, avoid: str) -> str:
    value = environ.get(variable, "").strip()
    if value:
        return value
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(32)
    while value == avoid:
        value = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value + "\n")
    return value


def load_secrets(data_dir: Path, environ: Mapping[str, str]) -> Secrets:
    """Secrets from the environment, else from `<data-dir>`, generated (mode 0600) on first use."""
    data_dir.mkdir(parents=True, exist_ok=True)
    cluster_secret = _secret_from(
        environ, CLUSTER_SECRET_ENV, data_dir / CLUSTER_SECRET_FILE, avoid=""
    )
    admin_token = _secret_from(
        environ, ADMIN_TOKEN_ENV, data_dir / ADMIN_TOKEN_FILE, avoid=cluster_secret
    )
    if admin_token == cluster_secret:
        raise ValueError("the admin token and the cluster secret must differ")
    return Secrets(cluster_secret=cluster_secret, admin_token=admin_token)
