"""The lab's command-line client (`bazar search|info|buy|status`) and the operator's
(`bazar replica add|remove`, `bazar switchover`), over plain HTTP.

It uses only the stdlib (urllib) so that the client works wherever Python does and adds no
dependency. Each command returns the process exit status of docs/contract.md §8, so that
scripts can tell a definite failure (1: not found, out of stock) from a usage error (2: bad
arguments, a server 422) from an unavailable service (3: refused, timed out, 503), where
retrying may help.

`buy` is safe to retry: it always sends an `Idempotency-Key` (a fresh uuid4 unless given) and
retries on a lost connection or a 503 with that *same* key, so a retry can never buy twice;
if it gives up it prints the key, so the user can retry by hand with `--idempotency-key`.

Membership changes go through the front end's admin routes and are *not* retried: a second
`POST /admin/replicas` after a lost answer could add a second replica. Each has one deadline
(`--timeout`) covering the request and, for `add`, the wait until the new replica is in sync;
running out of it is exit status 3, and the change may still complete (`bazar status` says).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from bazar.wire import (
    Book,
    BookData,
    BookListData,
    CacheInfo,
    ClusterData,
    ErrorBody,
    PurchaseData,
    ReplicaInfo,
    TierInfo,
)

DEFAULT_URL = "http://127.0.0.1:8002"
READ_TIMEOUT_S = 5.0
BUY_TIMEOUT_S = 10.0
BUY_ATTEMPTS = 5
BACKOFF_S = (0.25, 0.5, 1.0, 2.0)  # between attempts, unless the server sends Retry-After
MAX_RETRY_AFTER_S = 2.0  # writes resume within 2 s (docs/contract.md §3.5): never wait longer

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

_LOOPBACK_NAMES = ("localhost", "localhost.localdomain")
_USAGE_STATUSES = frozenset({400, 405, 413, 415, 422})
_STATE_STYLES: Mapping[str, str] = {"in_sync": "green", "catching_up": "yellow", "down": "red"}


class Unreachable(Exception):
    """No HTTP answer at all: refused, reset, timed out, or a broken response."""


class UsageError(Exception):
    """The command was given something unusable (e.g. a URL that is not http(s)://host)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP answer: status, raw body, and headers with lower-cased names."""

    status: int
    body: bytes
    headers: Mapping[str, str]

    @property
    def retry_after_s(self) -> float | None:
        value = self.headers.get("retry-after", "").strip()
        return float(value) if value.isdigit() else None


# ---------------------------------------------------------------- HTTP


def base_url(url: str) -> str:
    """`url` without its trailing slash, or UsageError if it is not an http(s) URL."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"not an http(s) URL: {url!r} (e.g. {DEFAULT_URL})")
    return url.strip().rstrip("/")


def is_loopback(url: str) -> bool:
    """Whether `url`'s host is this machine (localhost, 127.0.0.0/8, ::1)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _opener(url: str) -> urllib.request.OpenerDirector:
    # A local cluster must never be reached through an http_proxy from the environment.
    handlers = [urllib.request.ProxyHandler({})] if is_loopback(url) else []
    return urllib.request.build_opener(*handlers)


def fetch(
    method: str,
    url: str,
    *,
    timeout: float,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """One request; any HTTP status is a Reply, no answer at all raises Unreachable."""
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    request.add_header("Accept", "application/json")
    try:
        with _opener(url).open(request, timeout=timeout) as response:
            return Reply(response.status, response.read(), _lower(response.headers.items()))
    except urllib.error.HTTPError as err:
        try:
            return Reply(err.code, err.read(), _lower(err.headers.items()))
        finally:
            err.close()
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        raise Unreachable(f"cannot reach {url}: {reason or type(err).__name__}") from err


def _lower(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in items}


# ---------------------------------------------------------------- exit statuses


def exit_status(status: int, code: str | None = None) -> int:
    """docs/contract.md §8: 0 success, 1 definite failure, 2 usage error (a 422), 3 unavailable."""
    if 200 <= status < 300:
        return EXIT_OK
    if status >= 500 or (status == 409 and code == "idempotency_key_in_use"):
        return EXIT_UNAVAILABLE
    if status in _USAGE_STATUSES:
        return EXIT_USAGE
    return EXIT_FAILED


def error_of(reply: Reply) -> tuple[str, str]:
    """The (code, message) of an error reply; something readable even if it is not JSON."""
    try:
        detail = msgspec.json.decode(reply.body, type=ErrorBody).error
    except msgspec.MsgspecError:
        text = reply.body.decode("utf-8", "replace").strip()[:200]
        return f"http_{reply.status}", text or "no error body"
    return detail.code, detail.message


def _code_of(reply: Reply) -> str | None:
    return None if 200 <= reply.status < 300 else error_of(reply)[0]


# ---------------------------------------------------------------- output


def _stdout() -> Console:
    return Console(highlight=False)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _write_json(body: bytes) -> None:
    text = body.decode("utf-8", "replace")
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def _report_error(reply: Reply) -> None:
    code, message = error_of(reply)
    _stderr().print(f"[bold red]error[/] {escape(code)} ({reply.status}): {escape(message)}")


def _report_unreachable(err: Exception, *, as_json: bool, hint: str = "") -> int:
    return _report_unavailable("unavailable", str(err), as_json=as_json, hint=hint)


def _report_unavailable(code: str, message: str, *, as_json: bool, hint: str = "") -> int:
    """A failure found by the client itself (no answer, no progress): exit status 3."""
    if as_json:
        _write_json(json.dumps({"error": {"code": code, "message": message}}).encode())
    _stderr().print(f"[bold red]error[/] {code}: {escape(message)}{hint}")
    return EXIT_UNAVAILABLE


def _report_usage(err: UsageError) -> int:
    _stderr().print(f"[bold red]error[/] usage: {escape(str(err))}")
    return EXIT_USAGE


def format_cost(cost: float) -> str:
    return f"${cost:,.2f}"


def book_table(books: list[Book], *, title: str | None = None) -> Table:
    table = Table(title=title)
    table.add_column("id", justify="right", style="cyan")
    table.add_column("title", style="bold")
    table.add_column("topic")
    table.add_column("stock", justify="right")
    table.add_column("cost", justify="right", style="green")
    for book in books:
        stock = str(book.stock) if book.stock else "[red]0[/]"
        table.add_row(
            str(book.id), escape(book.title), escape(book.topic), stock, format_cost(book.cost)
        )
    return table


def book_panel(book: Book) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("topic", escape(book.topic))
    grid.add_row("stock", str(book.stock) if book.stock else "[red]0 (out of stock)[/]")
    grid.add_row("cost", format_cost(book.cost))
    return Panel(grid, title=f"[bold]#{book.id} {escape(book.title)}[/]", expand=False)


def tier_table(name: str, tier: TierInfo) -> Table:
    title = f"{name}: epoch {tier.epoch}, primary {escape(tier.primary)}"
    table = Table(title=title, title_justify="left")
    for column in ("name", "url", "role", "state"):
        table.add_column(column)
    for column in ("pid", "last_seq", "commit_seq"):
        table.add_column(column, justify="right")
    for replica in tier.replicas:
        style = _STATE_STYLES.get(replica.state, "")
        role = "[bold]primary[/]" if replica.role == "primary" else replica.role
        table.add_row(
            escape(replica.name),
            escape(replica.url),
            role,
            f"[{style}]{replica.state}[/]" if style else replica.state,
            _opt(replica.pid),
            _opt(replica.last_seq),
            _opt(replica.commit_seq),
        )
    return table


def cache_table(cache: CacheInfo) -> Table:
    lookups = cache.hits + cache.misses
    rate = f"{100 * cache.hits / lookups:.1f} %" if lookups else "-"
    table = Table(title="cache", title_justify="left")
    table.add_column("enabled")
    for column in ("entries", "hits", "misses", "hit rate", "invalidations", "late fills refused"):
        table.add_column(column, justify="right")
    table.add_row(
        "yes" if cache.enabled else "[red]no[/]",
        str(cache.entries),
        str(cache.hits),
        str(cache.misses),
        rate,
        str(cache.invalidations),
        str(cache.rejected_fills),
    )
    return table


def _opt(value: int | None) -> str:
    return "-" if value is None else str(value)


# ---------------------------------------------------------------- commands


Render = Callable[[Console, bytes], None]


def _finish(reply: Reply, *, as_json: bool, render: Render) -> int:
    """Print a reply (JSON as received, or rendered) and return its exit status."""
    status = exit_status(reply.status, _code_of(reply))
    if as_json:
        _write_json(reply.body)
    if status != EXIT_OK:
        _report_error(reply)
        return status
    if not as_json:
        try:
            render(_stdout(), reply.body)
        except msgspec.MsgspecError as err:
            _stderr().print(f"[bold red]error[/] unexpected response: {escape(str(err))}")
            return EXIT_UNAVAILABLE
    return EXIT_OK


def _get_command(url: str, path: str, *, as_json: bool, render: Render) -> int:
    try:
        reply = fetch("GET", base_url(url) + path, timeout=READ_TIMEOUT_S)
    except UsageError as err:
        return _report_usage(err)
    except Unreachable as err:
        return _report_unreachable(err, as_json=as_json)
    return _finish(reply, as_json=as_json, render=render)


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def search_command(url: str, topic: str, *, as_json: bool) -> int:
    """`bazar search TOPIC`: the books whose topic contains TOPIC."""

    def render(console: Console, body: bytes) -> None:
        books = msgspec.json.decode(body, type=BookListData).data
        if not books:
            console.print(f"no books on topic [bold]{escape(topic)}[/]")
            return
        console.print(book_table(books, title=f"books on topic {escape(topic)!r}"))

    return _get_command(url, f"/search/{_quote(topic)}", as_json=as_json, render=render)


def info_command(url: str, book_id: str, *, as_json: bool) -> int:
    """`bazar info ID`: one book. The id goes as typed, so the server validates it."""
    if not book_id:
        return _report_usage(UsageError("a book id is required"))

    def render(console: Console, body: bytes) -> None:
        console.print(book_panel(msgspec.json.decode(body, type=BookData).data))

    return _get_command(url, f"/info/{_quote(book_id)}", as_json=as_json, render=render)


def status_command(url: str, *, as_json: bool) -> int:
    """`bazar status`: each tier's view and replicas, and the front end's cache."""

    def render(console: Console, body: bytes) -> None:
        cluster = msgspec.json.decode(body, type=ClusterData).data
        console.print(tier_table("catalog", cluster.catalog))
        console.print(tier_table("order", cluster.order))
        console.print(cache_table(cluster.cache))

    return _get_command(url, "/cluster", as_json=as_json, render=render)


def _retryable(reply: Reply) -> bool:
    return reply.status == 503 or _code_of(reply) == "idempotency_key_in_use"


def retry_delay(attempt: int, retry_after_s: float | None) -> float:
    """Seconds to wait after failed attempt number `attempt` (0-based)."""
    if retry_after_s is not None:
        return min(retry_after_s, MAX_RETRY_AFTER_S)
    return BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]


def purchase(
    base: str,
    book_id: str,
    *,
    quantity: int,
    idempotency_key: str,
    attempts: int = BUY_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> Reply:
    """POST a purchase; on no answer or a 503, retry with the same key (at most `attempts`)."""
    target = f"{base}/purchase/{_quote(book_id)}"
    body = json.dumps({"quantity": quantity}).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}

    def attempt() -> Reply:
        return fetch("POST", target, body=body, headers=headers, timeout=BUY_TIMEOUT_S)

    for number in range(attempts - 1):
        try:
            reply = attempt()
        except Unreachable:
            sleep(retry_delay(number, None))
            continue
        if not _retryable(reply):
            return reply
        sleep(retry_delay(number, reply.retry_after_s))
    return attempt()


def _title_of(base: str, book_id: int) -> str:
    try:
        reply = fetch("GET", f"{base}/info/{book_id}", timeout=READ_TIMEOUT_S)
        return msgspec.json.decode(reply.body, type=BookData).data.title
    except (Unreachable, msgspec.MsgspecError):
        return f"#{book_id}"


def _render_purchase(base: str, reply: Reply) -> Render:
    def render(console: Console, body: bytes) -> None:
        order = msgspec.json.decode(body, type=PurchaseData).order
        title = _title_of(base, order.book_id)
        console.print(f"bought book {title}", markup=False, soft_wrap=True)
        console.print(
            f"order [cyan]{escape(order.id)}[/]: {order.quantity} x "
            f"{format_cost(order.unit_cost)} = [bold green]{format_cost(order.total_cost)}[/]"
        )
        if reply.headers.get("idempotent-replayed") == "true":
            console.print("[dim](replayed: this key had already bought it; nothing new)[/]")

    return render


def buy_command(
    url: str,
    book_id: str,
    *,
    quantity: int,
    idempotency_key: str | None,
    as_json: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """`bazar buy ID [-n N]`: buy exactly once, retrying safely while the service recovers."""
    if not book_id:
        return _report_usage(UsageError("a book id is required"))
    key = str(uuid.uuid4()) if idempotency_key is None else idempotency_key
    hint = f"\nthe outcome is unknown; retry safely with --idempotency-key {key}"
    try:
        base = base_url(url)
        reply = purchase(base, book_id, quantity=quantity, idempotency_key=key, sleep=sleep)
    except UsageError as err:
        return _report_usage(err)
    except Unreachable as err:
        return _report_unreachable(err, as_json=as_json, hint=escape(hint))
    status = _finish(reply, as_json=as_json, render=_render_purchase(base, reply))
    if status == EXIT_UNAVAILABLE:
        _stderr().print(escape(hint.lstrip("\n")))
    return status


# ---------------------------------------------------------------- membership (admin)


MEMBERSHIP_TIMEOUT_S = 60.0  # `--timeout` of replica add/remove, switchover (docs/contract.md §8)
POLL_S = 0.25  # between looks at /cluster while a new replica catches up
_CHECK_HINT = "\nthe change may or may not have been made; check with `bazar status`"


class _Named(msgspec.Struct, frozen=True):
    """The part of an admin reply's replica that the client reads. Other fields are ignored
    (a tolerant reader: a newer front end may add some); the server's schemas are in wire.py."""

    name: str
    url: str = ""


class _NamedData(msgspec.Struct, frozen=True):
    data: _Named


class _ViewSummary(msgspec.Struct, frozen=True):
    """The part of an admin reply's view that the client prints."""

    epoch: int
    primary: str


class _ViewData(msgspec.Struct, frozen=True):
    data: _ViewSummary


@dataclass(frozen=True, slots=True)
class Admin:
    """The admin routes of one front end, the admin token, and the deadline of one change."""

    base: str
    token: str
    deadline_s: float  # on `now`'s clock
    now: Callable[[], float] = time.monotonic

    def remaining_s(self) -> float:
        return self.deadline_s - self.now()

    def call(self, method: str, path: str, payload: Mapping[str, object] | None = None) -> Reply:
        """One admin request, allowed whatever time is left. Raises: Unreachable."""
        headers = {"Authorization": f"Bearer {self.token}"}
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        timeout = max(self.remaining_s(), 0.001)
        return fetch(method, self.base + path, body=body, headers=headers, timeout=timeout)


def admin(
    url: str, token: str | None, timeout_s: float, now: Callable[[], float] = time.monotonic
) -> Admin:
    """Raises: UsageError for a bad URL, no token, or a deadline that is not in the future."""
    if not token:
        raise UsageError(
            "no admin token: set BAZAR_ADMIN_TOKEN, or point --data-dir at the cluster's data"
            " directory (it holds admin.token)"
        )
    if not timeout_s > 0:
        raise UsageError(f"--timeout must be a positive number of seconds, not {timeout_s}")
    return Admin(base_url(url), token, now() + timeout_s, now)


def _check_name(service: str, name: str) -> None:
    """Raises: UsageError unless `name` is one of `service`'s (`catalog-3` is a catalog's)."""
    if not name.startswith(f"{service}-"):
        raise UsageError(f"{name!r} is not the name of a {service} replica ({service}-N)")


def replica_add_command(
    url: str,
    service: str,
    *,
    replica_url: str | None,
    token: str | None,
    timeout_s: float,
    as_json: bool,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], float] = time.monotonic,
) -> int:
    """`bazar replica add SERVICE`: add a replica, wait until it is in sync, print its name."""
    payload = {"service": service}
    try:
        front_end = admin(url, token, timeout_s, now)
        if replica_url is not None:
            payload["url"] = base_url(replica_url)
        reply = front_end.call("POST", "/admin/replicas", payload)
    except UsageError as err:
        return _report_usage(err)
    except Unreachable as err:
        return _report_unreachable(err, as_json=as_json, hint=escape(_CHECK_HINT))
    if exit_status(reply.status, _code_of(reply)) != EXIT_OK:
        return _finish(reply, as_json=as_json, render=lambda console, body: None)
    try:
        added = msgspec.json.decode(reply.body, type=_NamedData).data
    except msgspec.MsgspecError as err:
        message = f"added, but the answer is unexpected ({err}); check with `bazar status`"
        return _report_unavailable("unavailable", message, as_json=as_json)
    _stderr().print(f"added {escape(added.name)} {escape(added.url)}, waiting until it is in sync")
    replica, state = add_wait_in_sync(front_end, service, added.name, sleep=sleep)
    if replica is None:
        message = (
            f"{added.name} is not in sync after {timeout_s:g} s (last seen: {state});"
            " it may still catch up: watch it with `bazar status`"
        )
        return _report_unavailable("timeout", message, as_json=as_json)
    if as_json:
        _write_json(msgspec.json.encode({"data": replica}))
    else:
        _stdout().print(replica.name, markup=False)
    return EXIT_OK


def add_wait_in_sync(
    front_end: Admin, service: str, name: str, *, sleep: Callable[[float], None]
) -> tuple[ReplicaInfo | None, str]:
    """Poll /cluster until `name` is in sync, or the deadline: (its entry or None, last state).

    No answer, an error or an odd body is only "not yet": the replica was added, and the
    front end may be busy installing the view that takes it in.
    """
    state = "unknown"
    while (remaining_s := front_end.remaining_s()) > 0:
        replica = _add_look_up(front_end, service, name, min(READ_TIMEOUT_S, remaining_s))
        if replica is not None:
            state = replica.state
            if state == "in_sync":
                return replica, state
        sleep(max(0.0, min(POLL_S, front_end.remaining_s())))
    return None, state


def _add_look_up(front_end: Admin, service: str, name: str, timeout_s: float) -> ReplicaInfo | None:
    try:
        reply = fetch("GET", front_end.base + "/cluster", timeout=timeout_s)
        cluster = msgspec.json.decode(reply.body, type=ClusterData).data
    except (Unreachable, msgspec.MsgspecError):
        return None
    tier = cluster.catalog if service == "catalog" else cluster.order
    return next((replica for replica in tier.replicas if replica.name == name), None)


def _change_view(
    front_end: Admin,
    method: str,
    path: str,
    payload: Mapping[str, object] | None,
    *,
    as_json: bool,
    headline: Callable[[_ViewSummary], str],
) -> int:
    """Send one view change and print the view it installed (or the error)."""
    try:
        reply = front_end.call(method, path, payload)
    except Unreachable as err:
        return _report_unreachable(err, as_json=as_json, hint=escape(_CHECK_HINT))

    def render(console: Console, body: bytes) -> None:
        console.print(headline(msgspec.json.decode(body, type=_ViewData).data), markup=False)

    return _finish(reply, as_json=as_json, render=render)


def replica_remove_command(
    url: str,
    service: str,
    name: str,
    *,
    token: str | None,
    timeout_s: float,
    as_json: bool,
    now: Callable[[], float] = time.monotonic,
) -> int:
    """`bazar replica remove SERVICE NAME`: drop a replica from the view and stop it."""
    try:
        _check_name(service, name)
        front_end = admin(url, token, timeout_s, now)
    except UsageError as err:
        return _report_usage(err)

    def headline(view: _ViewSummary) -> str:
        return f"removed {name}: {service} is at epoch {view.epoch}, primary {view.primary}"

    path = f"/admin/replicas/{_quote(name)}"
    return _change_view(front_end, "DELETE", path, None, as_json=as_json, headline=headline)


def switchover_command(
    url: str,
    service: str,
    *,
    to: str | None,
    token: str | None,
    timeout_s: float,
    as_json: bool,
    now: Callable[[], float] = time.monotonic,
) -> int:
    """`bazar switchover SERVICE [--to NAME]`: move the primary role, to NAME or any in-sync
    backup, with no failed write."""
    try:
        if to is not None:
            _check_name(service, to)
        front_end = admin(url, token, timeout_s, now)
    except UsageError as err:
        return _report_usage(err)

    def headline(view: _ViewSummary) -> str:
        return f"{service}: the primary is {view.primary}, epoch {view.epoch}"

    payload = {"service": service, "to": to}
    path = "/admin/switchover"
    return _change_view(front_end, "POST", path, payload, as_json=as_json, headline=headline)
