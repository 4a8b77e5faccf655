"""The `bazar` command, and the composition root: it reads the environment once, builds the
configuration, wires the objects of a process together and starts them. Only this module
reads `os.environ` and `sys.argv`, and only it prints (besides the client and bench output).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from bazar import client
from bazar.bench import command as bench
from bazar.bench import scenarios
from bazar.config import (
    ADMIN_TOKEN_ENV,
    ADMIN_TOKEN_FILE,
    CLUSTER_FILE,
    DEFAULT_FRONTEND_PORT,
    LOG_FORMATS,
    REPLICATED_TIERS,
    load_cluster,
    load_secrets,
    plan_cluster,
    write_cluster,
)


def _positive_int(text: str) -> int:
    """An argparse type: a bad value is a usage error (exit status 2), not a traceback."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer of at least 1, not {text!r}")
    return int(text)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _membership_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=client.DEFAULT_URL, help="the front end")
    parser.add_argument("--data-dir", default="./data", help="where admin.token is")
    parser.add_argument("--timeout", type=_positive_seconds, default=client.MEMBERSHIP_TIMEOUT_S)
    parser.add_argument("--json", action="store_true")


def _membership_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`bazar replica add|remove`, `bazar switchover`: runtime membership (docs/contract.md §4)."""
    replica = commands.add_parser("replica", help="add or remove a replica at runtime")
    actions = replica.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="start a replica (or register one), wait until in sync")
    add.add_argument("service", choices=REPLICATED_TIERS)
    add.add_argument("--replica-url", default=None, help="a replica started with `bazar serve`")
    remove = actions.add_parser("remove", help="drop a replica from the view and stop it")
    remove.add_argument("service", choices=REPLICATED_TIERS)
    remove.add_argument("name")
    switchover = commands.add_parser("switchover", help="move the primary role")
    switchover.add_argument("service", choices=REPLICATED_TIERS)
    switchover.add_argument("--to", default=None, help="the new primary (any in-sync backup)")
    for parser in (add, remove, switchover):
        _membership_options(parser)


def _non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text!r}")
    return value


def _bench_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`bazar bench` (docs/contract.md §4, docs/bench.md): the lab's measurements."""
    run = commands.add_parser(
        "bench",
        help="measure latency, throughput and CPU per request",
        description="Closed-loop load against a running front end; see docs/bench.md.",
    )
    run.add_argument("--url", default=client.DEFAULT_URL, help="the front end")
    run.add_argument(
        "--scenario",
        nargs="+",
        choices=scenarios.SCENARIO_CHOICES,
        default=None,
        help="default: the hits and misses, and with an admin token purchase, mixed and "
        "invalidation (info and search are the old names of info-hit and search-hit)",
    )
    run.add_argument(
        "--concurrency",
        nargs="+",
        type=_positive_int,
        default=list(scenarios.DEFAULT_CONCURRENCY),
        help="clients (closed loop), one run per value",
    )
    run.add_argument("--duration", type=_positive_seconds, default=scenarios.DEFAULT_DURATION_S)
    run.add_argument("--warmup", type=_non_negative_seconds, default=scenarios.WARMUP_S)
    run.add_argument(
        "--processes",
        type=_positive_int,
        default=None,
        help="load processes per run (default: 1 up to 8 clients, else one per core, at most 4)",
    )
    run.add_argument(
        "--baseline",
        action="store_true",
        help="also measure a bare aiohttp server (scenario bare); info-hit as a ratio to it",
    )
    run.add_argument("--failover-tier", choices=scenarios.TIERS, default="catalog")
    run.add_argument(
        "--kill-after",
        type=_non_negative_seconds,
        default=None,
        help="seconds into the failover run's window (default: a quarter of --duration)",
    )
    run.add_argument("--output", default=None, metavar="FILE.json", help="every result, as JSON")
    run.add_argument("--plots", default=None, metavar="DIR", help="PNG plots")
    run.add_argument(
        "--compare",
        nargs=2,
        default=None,
        metavar=("OLD.json", "NEW.json"),
        help="print a before/after table of two --output files; runs nothing",
    )
    run.add_argument("--admin-token", default=None)
    run.add_argument("--data-dir", default="./data", help="where admin.token is")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bazar", description="Bazar, a replicated bookstore.")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the whole cluster and supervise it")
    up.add_argument("--data-dir", default="./data")
    up.add_argument("--port", type=int, default=DEFAULT_FRONTEND_PORT)
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--catalog-replicas", type=_positive_int, default=2)
    up.add_argument("--order-replicas", type=_positive_int, default=2)
    up.add_argument("--no-restart", action="store_true")
    up.add_argument("--no-cache", action="store_true", help="serve every read from a replica")
    up.add_argument("--cache-entries", type=int, default=10_000, help="cache size bound")
    up.add_argument("--cache-ttl-ms", type=int, default=60_000, help="cache entry lifetime")
    up.add_argument("--test-hooks", action="store_true", help=argparse.SUPPRESS)
    up.add_argument(
        "--demo",
        action="store_true",
        help="teaching console in the web page: kill, pause, resume, restart replicas "
        "(with the admin token)",
    )
    up.add_argument("--read-timeout-ms", type=int, default=None, help=argparse.SUPPRESS)
    # `[limits] replicas_max` of the cluster file, for tests that reach it with few replicas.
    up.add_argument("--replicas-max", type=_positive_int, default=None, help=argparse.SUPPRESS)
    up.add_argument(
        "--log-entries-max",
        type=_positive_int,
        default=None,
        help="committed log entries each replica keeps (one further behind gets a snapshot)",
    )
    up.add_argument("--catalog", default=None, help="initial catalog (JSON or TOML)")
    up.add_argument(
        "--min-in-sync",
        type=_positive_int,
        default=1,
        help="refuse writes while fewer replicas of a service are in sync",
    )

    serve = _serve_parser(commands)
    for process in (up, serve):
        process.add_argument(
            "--log-format",
            choices=LOG_FORMATS,
            default="text",
            help="each process's log lines (<data-dir>/logs/<name>.log and stderr)",
        )

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

    _bench_parser(commands)
    _membership_parsers(commands)
    return parser


def _serve_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    serve: argparse.ArgumentParser = commands.add_parser(
        "serve", help="run one process of a cluster"
    )
    serve.add_argument("tier", choices=["frontend", "catalog", "order"])
    serve.add_argument("--config", required=True)
    serve.add_argument("--name", required=True)
    serve.add_argument(
        "--host",
        default=None,
        help="address to listen on (default: the process's host in the cluster file; "
        "a container listens on 0.0.0.0 while its peers reach it by its service name)",
    )
    # The supervisor's control socket (`bazar up --demo`), given to the front end only.
    serve.add_argument("--control-socket", default=None, help=argparse.SUPPRESS)
    return serve


def _up(args: argparse.Namespace) -> int:
    from bazar.supervisor import Supervisor

    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
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
            log_entries_max=args.log_entries_max,
            min_in_sync=args.min_in_sync,
            replicas_max=args.replicas_max,
        )
    except ValueError as error:  # more replicas than a service may have
        print(f"error usage: {error}", file=sys.stderr)
        return 2
    smallest = min(args.catalog_replicas, args.order_replicas)
    if args.min_in_sync > smallest:
        print(
            f"warning: --min-in-sync {args.min_in_sync} but a service has {smallest} replicas:"
            " its writes are refused until replicas are added",
            file=sys.stderr,
        )
    load_secrets(data_dir, os.environ)
    cluster_file = data_dir / CLUSTER_FILE
    write_cluster(cluster, cluster_file)
    return Supervisor(
        cluster,
        cluster_file,
        restart=not args.no_restart,
        log_format=args.log_format,
        demo=args.demo,
    ).run()


def _serve(args: argparse.Namespace) -> int:
    from bazar import logs, server

    cluster = load_cluster(Path(args.config))
    secrets = load_secrets(Path(cluster.data_dir), os.environ)
    node = cluster.node(args.name)
    if node.tier != args.tier:
        print(f"{args.name} is a {node.tier} process, not {args.tier}", file=sys.stderr)
        return 2
    logs.configure(node.name, Path(cluster.data_dir), args.log_format, cluster.limits)
    if args.tier == "frontend":
        from bazar.frontend.service import Frontend

        control = Path(args.control_socket) if args.control_socket else None
        app = Frontend(cluster, secrets, Path(args.config), control_socket=control).app()
    elif args.tier == "catalog":
        from bazar.catalog.service import CatalogService

        app = CatalogService(cluster, node, secrets).app()
    else:
        from bazar.order.service import OrderService

        app = OrderService(cluster, node, secrets).app()
    server.serve(app, args.host or node.host, node.port, cluster.limits, secrets.cluster_secret)
    return 0


def _admin_token(args: argparse.Namespace) -> str | None:
    """`--admin-token` (bench only), else BAZAR_ADMIN_TOKEN, else `<--data-dir>/admin.token`.

    Raises: OSError if the token file exists but cannot be read.
    """
    if getattr(args, "admin_token", None):
        return str(args.admin_token)
    if os.environ.get(ADMIN_TOKEN_ENV):
        return os.environ[ADMIN_TOKEN_ENV]
    path = Path(args.data_dir) / ADMIN_TOKEN_FILE
    return (path.read_text().strip() or None) if path.exists() else None


def _bench(args: argparse.Namespace, argv: list[str]) -> int:
    if args.compare:
        old, new = args.compare
        return bench.compare_command(old, new)
    try:
        token = _admin_token(args)
    except OSError as err:
        print(f"error usage: cannot read the admin token: {err}", file=sys.stderr)
        return client.EXIT_USAGE
    writes = scenarios.DEFAULT_WRITE_SCENARIOS if token else ()
    return bench.bench_command(
        args.url,
        scenarios=args.scenario or [*scenarios.DEFAULT_SCENARIOS, *writes],
        concurrency=args.concurrency,
        duration_s=args.duration,
        admin_token=token,
        output=args.output,
        plots=args.plots,
        warmup_s=args.warmup,
        processes=args.processes,
        baseline=args.baseline,
        failover_options=scenarios.FailoverOptions(args.failover_tier, args.kill_after),
        command=shlex.join(["bazar", *argv]),
    )


def _membership(args: argparse.Namespace) -> int:
    try:
        token = _admin_token(args)
    except OSError as err:
        print(f"error usage: cannot read the admin token: {err}", file=sys.stderr)
        return client.EXIT_USAGE
    timeout_s: float = args.timeout
    as_json: bool = args.json
    if args.command == "switchover":
        return client.switchover_command(
            args.url, args.service, to=args.to, token=token, timeout_s=timeout_s, as_json=as_json
        )
    if args.action == "add":
        return client.replica_add_command(
            args.url,
            args.service,
            replica_url=args.replica_url,
            token=token,
            timeout_s=timeout_s,
            as_json=as_json,
        )
    return client.replica_remove_command(
        args.url, args.service, args.name, token=token, timeout_s=timeout_s, as_json=as_json
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
    if args.command in ("replica", "switchover"):
        return _membership(args)
    return _bench(args, argv)


def main() -> None:
    if not __debug__:
        sys.exit("bazar relies on its assertions: do not run it with python -O")
    sys.exit(run(sys.argv[1:]))
