"""The `bazar` command, and the composition root: it reads the environment once, builds the
configuration, wires the objects of a process together and starts them. Only this module
reads `os.environ` and `sys.argv`, and only it prints (besides the client and bench output).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from bazar import bench, client
from bazar.config import (
    ADMIN_TOKEN_ENV,
    ADMIN_TOKEN_FILE,
    CLUSTER_FILE,
    DEFAULT_FRONTEND_PORT,
    load_cluster,
    load_secrets,
    plan_cluster,
    write_cluster,
)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bazar", description="Bazar, a replicated bookstore.")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the whole cluster and supervise it")
    up.add_argument("--data-dir", default="./data")
    up.add_argument("--port", type=int, default=DEFAULT_FRONTEND_PORT)
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--catalog-replicas", type=int, default=2)
    up.add_argument("--order-replicas", type=int, default=2)
    up.add_argument("--no-restart", action="store_true")
    up.add_argument("--no-cache", action="store_true", help="serve every read from a replica")
    up.add_argument("--cache-entries", type=int, default=10_000, help="cache size bound")
    up.add_argument("--cache-ttl-ms", type=int, default=60_000, help="cache entry lifetime")
    up.add_argument("--test-hooks", action="store_true", help=argparse.SUPPRESS)
    up.add_argument("--read-timeout-ms", type=int, default=None, help=argparse.SUPPRESS)
    up.add_argument("--catalog", default=None, help="initial catalog (JSON or TOML)")

    serve = commands.add_parser("serve", help="run one process of a cluster")
    serve.add_argument("tier", choices=["frontend", "catalog", "order"])
    serve.add_argument("--config", required=True)
    serve.add_argument("--name", required=True)

    for name, help_text in (
        ("search", "books whose topic contains TOPIC"),
        ("info", "one book"),
        ("buy", "buy a book"),
        ("status", "the cluster as a table"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--url", default=client.DEFAULT_URL)
        sub.add_argument("--json", action="store_true")
        if name == "search":
            sub.add_argument("topic")
        if name in ("info", "buy"):
            sub.add_argument("id")
        if name == "buy":
            sub.add_argument("-n", "--quantity", type=int, default=1)
            sub.add_argument("--idempotency-key", default=None)

    run = commands.add_parser("bench", help="measure latency and throughput")
    run.add_argument("--url", default=client.DEFAULT_URL)
    run.add_argument("--scenario", nargs="+", choices=bench.SCENARIO_NAMES, default=None)
    run.add_argument("--concurrency", nargs="+", type=int, default=list(bench.DEFAULT_CONCURRENCY))
    run.add_argument("--duration", type=float, default=bench.DEFAULT_DURATION_S)
    run.add_argument("--output", default=None)
    run.add_argument("--admin-token", default=None)
    run.add_argument("--data-dir", default="./data")
    return parser


def _up(args: argparse.Namespace) -> int:
    from bazar.supervisor import Supervisor

    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    cluster = plan_cluster(
        data_dir=data_dir,
        host=args.host,
        port=args.port,
        catalog_replicas=args.catalog_replicas,
        order_replicas=args.order_replicas,
        catalog_file=args.catalog,
        cache_enabled=not args.no_cache,
        cache_entries_max=args.cache_entries,
        cache_ttl_ms=args.cache_ttl_ms,
        test_hooks=args.test_hooks,
        read_timeout_ms=args.read_timeout_ms,
    )
    load_secrets(data_dir, os.environ)
    cluster_file = data_dir / CLUSTER_FILE
    write_cluster(cluster, cluster_file)
    return Supervisor(cluster, cluster_file, restart=not args.no_restart).run()


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    cluster = load_cluster(Path(args.config))
    secrets = load_secrets(Path(cluster.data_dir), os.environ)
    node = cluster.node(args.name)
    if node.tier != args.tier:
        print(f"{args.name} is a {node.tier} process, not {args.tier}", file=sys.stderr)
        return 2
    if args.tier == "frontend":
        from bazar.services.frontend import Frontend

        app = Frontend(cluster, secrets).app()
    elif args.tier == "catalog":
        from bazar.services.catalog import CatalogService

        app = CatalogService(cluster, node, secrets).app()
    else:
        from bazar.services.order import OrderService

        app = OrderService(cluster, node, secrets).app()
    config = uvicorn.Config(
        app,
        host=node.host,
        port=node.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
        backlog=2048,
        timeout_graceful_shutdown=2,
    )
    uvicorn.Server(config).run()
    return 0


def _admin_token(args: argparse.Namespace) -> str | None:
    if args.admin_token:
        return str(args.admin_token)
    if os.environ.get(ADMIN_TOKEN_ENV):
        return os.environ[ADMIN_TOKEN_ENV]
    path = Path(args.data_dir) / ADMIN_TOKEN_FILE
    return path.read_text().strip() if path.exists() else None


def _bench(args: argparse.Namespace) -> int:
    token = _admin_token(args)
    scenarios = args.scenario or ["info", "search", "list", *(["purchase"] if token else [])]
    return bench.bench_command(
        args.url,
        scenarios=scenarios,
        concurrency=args.concurrency,
        duration_s=args.duration,
        admin_token=token,
        output=args.output,
    )


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "up":
        return _up(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "search":
        return client.search_command(args.url, args.topic, as_json=args.json)
    if args.command == "info":
        return client.info_command(args.url, args.id, as_json=args.json)
    if args.command == "buy":
        return client.buy_command(
            args.url,
            args.id,
            quantity=args.quantity,
            idempotency_key=args.idempotency_key,
            as_json=args.json,
        )
    if args.command == "status":
        return client.status_command(args.url, as_json=args.json)
    return _bench(args)


def main() -> None:
    if not __debug__:
        sys.exit("bazar relies on its assertions: do not run it with python -O")
    sys.exit(run(sys.argv[1:]))
