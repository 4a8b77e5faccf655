"""Membership at runtime loses nothing and fails nothing (the admin routes of
docs/contract.md §2, §3.9).

Goal: the test fails if adding a replica to a running service, moving the primary role to it
(switchover) and removing the old primary, all under load, fails a read, answers a purchase
with anything but 200 (a switchover holds writes briefly, it never 503s them), loses an
acknowledged purchase, sells a key twice, or leaves the in-sync replicas different; or if
the new replica does not turn `in_sync` by itself, or the removed one keeps running.

Method: the failover harness (`bazar.testing.harness`, `bazar.testing.clients`): a real
cluster under `bazar up --no-restart`, 8 buyers with idempotency keys and 4 readers through
the front end, each change made with the admin token through the front end's admin routes
(what `bazar replica add/remove` and `bazar switchover` call), each awaited on `/cluster`
with a deadline. After the load: the history is linearizable, every acknowledged purchase
is on every live replica, orders == sales, and the live replicas' digests agree.

The same changes of the catalog tier run beside admin `PATCH /books/{id}` without an
`Idempotency-Key` (`test_admin_updates_beside_membership_changes_...`): none may get a 5xx,
and every acknowledged update must be applied exactly once.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bazar.config import Node, load_cluster, with_replica, write_cluster
from bazar.testing.clients import Ledger, wait_for_acks
from bazar.testing.cluster import Cluster, free_port, running, served_by_hand, wait_until
from bazar.testing.harness import (
    STOCKS,
    Event,
    Nemesis,
    check_after_load,
    check_load,
    expect,
    failover_cluster,
    failover_load,
    listed,
    live_digests,
    live_stocks,
)

ACKS_BETWEEN_CHANGES = 50
JOIN_DEADLINE_S = 20.0
STOP_DEADLINE_S = 15.0
UPDATERS = 4
STOCK_DELTAS = (-3, -2, -1, 1, 2, 3, 4, 5)  # the stocks (STOCKS) are ample: every one is 200
UPDATES_BETWEEN_CHANGES = 20
UPDATES_DEADLINE_S = 15.0
QUIESCENCE_DEADLINE_S = 10.0


def admin(cluster: Cluster, method: str, path: str, body: object | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {cluster.admin_token}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    return cluster.json(method, path, body=data, headers=headers, timeout_s=30.0)


def listening(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((parts.hostname or "", parts.port or 0)) == 0


def add_switch_over_and_remove(
    cluster: Cluster, tier: str, nemesis: Nemesis, settle: Callable[[Event], None]
) -> None:
    """Under whatever load runs: add a replica to `tier` and wait until it is in sync, switch
    the primary role over to it, then remove the old primary and wait until it has stopped.
    Each change is marked on `nemesis`; `settle(its event)` lets the load run in the view it
    made before the next."""
    old_primary = str(cluster.cluster_info()[tier]["primary"])
    added = nemesis.mark(f"add a {tier} replica")
    status, body = admin(cluster, "POST", "/admin/replicas", {"service": tier})
    assert status == 202, body
    name = str(body["data"]["name"])
    assert body["data"]["state"] == "catching_up", body
    expect(
        lambda: listed(cluster, name, ("in_sync",)),
        JOIN_DEADLINE_S,
        f"{name} in sync by itself",
        lambda: str(cluster.cluster_info()[tier]),
    )
    settle(added)
    switch = nemesis.mark(f"switch {tier} over to {name}")
    status, body = admin(cluster, "POST", "/admin/switchover", {"service": tier, "to": name})
    assert (status, body["data"]["primary"]) == (200, name), body
    settle(switch)
    old_url = next(
        r["url"] for r in cluster.cluster_info()[tier]["replicas"] if r["name"] == old_primary
    )
    removal = nemesis.mark(f"remove {old_primary}")
    status, body = admin(cluster, "DELETE", f"/admin/replicas/{old_primary}", None)
    assert status == 200, body
    assert old_primary not in {r["name"] for r in body["data"]["replicas"]}, body
    wait_until(lambda: not listening(old_url), STOP_DEADLINE_S, f"{old_primary} stopped")
    settle(removal)


@pytest.mark.parametrize("tier", ["catalog", "order"])
def test_add_switch_over_and_remove_under_load_fail_nothing(tmp_path: Path, tier: str) -> None:
    """Add a replica to the catalog or order service under load, wait until it is in sync,
    switch the primary role over to it, then remove the old primary: every purchase is
    answered 200, no read fails, and nothing is lost."""
    ledger = Ledger()
    with failover_cluster(tmp_path, ledger) as cluster:
        nemesis = Nemesis(cluster)

        def settle(event: Event) -> None:
            wait_for_acks(ledger, ACKS_BETWEEN_CHANGES, event.at_s, f"since {event.what}")

        with failover_load(cluster, ledger):
            wait_for_acks(ledger, ACKS_BETWEEN_CHANGES, 0.0, "before the changes")
            add_switch_over_and_remove(cluster, tier, nemesis, settle)
        answers = [a.status for a in ledger.attempts()]
        assert set(answers) == {200}, f"purchase answers other than 200: {sorted(answers)[:10]}"
        check_load(ledger, nemesis.events)
        print(check_after_load(cluster, ledger))


@dataclass(frozen=True, slots=True)
class Update:
    """One admin PATCH and its answer (status 0: none came)."""

    book_id: int
    stock_delta: int
    status: int
    body: Any
    invoke_s: float

    @property
    def answer(self) -> str:
        """The status, with the error code of a refusal."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return f"{self.status} {error['code']}" if isinstance(error, dict) else str(self.status)


class Updaters:
    """`UPDATERS` admins, each sending `PATCH /books/{id}` with a random `stock_delta` and
    no `Idempotency-Key`, one after another until stopped."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.updates: list[Update] = []

    def update(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stopped.is_set():
            book_id, delta = rng.choice(sorted(STOCKS)), rng.choice(STOCK_DELTAS)
            invoke_s = time.monotonic()
            status, body = admin(self.cluster, "PATCH", f"/books/{book_id}", {"stock_delta": delta})
            with self.lock:
                self.updates.append(Update(book_id, delta, status, body, invoke_s))

    def acks_since(self, since_s: float) -> int:
        with self.lock:
            return sum(1 for u in self.updates if u.status == 200 and u.invoke_s >= since_s)

    def settle(self, event: Event) -> None:
        wait_until(
            lambda: self.acks_since(event.at_s) >= UPDATES_BETWEEN_CHANGES,
            UPDATES_DEADLINE_S,
            f"{UPDATES_BETWEEN_CHANGES} updates acknowledged since {event.what}",
        )

    @contextlib.contextmanager
    def running(self) -> Iterator[Updaters]:
        threads = [threading.Thread(target=self.update, args=(n,)) for n in range(UPDATERS)]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self.stopped.set()
            for thread in threads:
                thread.join()


def test_admin_updates_beside_membership_changes_get_no_5xx_and_apply_once(
    tmp_path: Path,
) -> None:
    """Goal: membership changes fail no admin write. The test fails if an admin
    `PATCH /books/{id}` without an `Idempotency-Key` gets anything but 200 (a 5xx above all:
    a view change abandoned its batch, or replaced its primary) while a catalog replica is
    added, the primary role switched over to it and the old primary removed; or if an
    acknowledged update is lost or applied twice.

    Method: a real cluster (`bazar up --no-restart`) with ample stock; 4 admins send PATCHes
    with random deltas through the front end, one after another, for the whole run; each
    change waits for updates acknowledged in the view it made. Then, at quiescence, on every
    live catalog replica: each book's stock == initial + the sum of the acknowledged deltas,
    and the `updates` table holds exactly one record per acknowledged update (the front end's
    retries under its own key replayed, never executed again); the live digests agree."""
    with failover_cluster(tmp_path, Ledger()) as cluster:
        nemesis = Nemesis(cluster)
        with Updaters(cluster).running() as updaters:
            updaters.settle(nemesis.mark("updates start"))
            add_switch_over_and_remove(cluster, "catalog", nemesis, updaters.settle)
        updates = updaters.updates
        answers = Counter(update.answer for update in updates)
        assert set(answers) == {"200"}, f"PATCH answers other than 200: {answers}"
        seen: dict[str, Any] = {}

        def quiescent() -> bool:
            digests = live_digests(cluster, "catalog")
            seen["digests"] = digests
            return digests is not None and len({json.dumps(d) for d in digests.values()}) == 1

        expect(quiescent, QUIESCENCE_DEADLINE_S, "live catalog digests equal", lambda: str(seen))
        expected = Counter(STOCKS)
        for update in updates:
            expected[update.book_id] += update.stock_delta
        for name, stocks in live_stocks(cluster).items():
            assert stocks == dict(expected), (name, stocks, dict(expected))
        for name, digest in seen["digests"].items():
            assert digest["tables"]["updates"]["rows"] == len(updates), (name, len(updates))
        print(f"{len(updates)} updates, {dict(answers)}; events {[e.what for e in nemesis.events]}")


def test_membership_refusals(tmp_path: Path) -> None:
    """The admin routes' definite refusals: the token, an unknown name, a target that is
    not in sync, the last in-sync replica, a bad body."""
    ledger = Ledger()
    with failover_cluster(tmp_path, ledger) as cluster:
        status, body = cluster.json("POST", "/admin/switchover", body=b'{"service": "order"}')
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        status, body = admin(cluster, "DELETE", "/admin/replicas/catalog-9", None)
        assert (status, body["error"]["code"]) == (404, "not_found")
        status, body = admin(cluster, "POST", "/admin/switchover", {"service": "x"})
        assert (status, body["error"]["code"]) == (422, "invalid_request")
        status, body = admin(
            cluster, "POST", "/admin/switchover", {"service": "order", "to": "order-1"}
        )
        assert (status, body["error"]["code"]) == (409, "not_in_sync"), body
        status, body = admin(cluster, "DELETE", "/admin/replicas/order-2", None)
        assert status == 200, body
        status, body = admin(cluster, "DELETE", "/admin/replicas/order-1", None)
        assert (status, body["error"]["code"]) == (409, "last_replica"), body


def on_disk(cluster: Cluster) -> tuple[str, list[str]]:
    """The cluster file `bazar up` starts replicas from, and what the data dir holds."""
    cluster_file = cluster.data_dir / "cluster.toml"
    return cluster_file.read_text(), sorted(entry.name for entry in cluster.data_dir.iterdir())


def test_add_beyond_replicas_max_is_409_and_starts_nothing(tmp_path: Path) -> None:
    """A service has at most `[limits] replicas_max` replicas (3 here, beside 2 + 2): a third
    catalog replica is added, a fourth is refused with 409 `too_many_replicas`, started by
    `bazar up` or registered by URL alike, before anything is written or started (the cluster
    file that `bazar up` starts replicas from, the view, the data dir are as they were); the
    order service, which has room, still takes one."""
    with running(tmp_path / "cluster", restart=False, replicas_max=3) as cluster:
        status, body = admin(cluster, "POST", "/admin/replicas", {"service": "catalog"})
        assert (status, body["data"]["name"]) == (202, "catalog-3"), body
        expect(
            lambda: listed(cluster, "catalog-3", ("in_sync",)),
            JOIN_DEADLINE_S,
            "catalog-3 in sync by itself",
            lambda: str(cluster.cluster_info()["catalog"]),
        )
        before = on_disk(cluster)
        view = cluster.cluster_info()["catalog"]
        # (The limit is checked first: nothing answers at this URL, and nobody asks.)
        for request in (
            {"service": "catalog"},
            {"service": "catalog", "url": "http://127.0.0.1:9"},
        ):
            status, body = admin(cluster, "POST", "/admin/replicas", request)
            assert (status, body["error"]["code"]) == (409, "too_many_replicas"), body
        after = cluster.cluster_info()["catalog"]
        assert (after["epoch"], len(after["replicas"])) == (view["epoch"], 3), after
        assert on_disk(cluster) == before
        assert not (cluster.data_dir / "logs" / "catalog-4.log").exists()
        status, body = admin(cluster, "POST", "/admin/replicas", {"service": "order"})
        assert (status, body["data"]["name"]) == (202, "order-3"), body


def test_replica_started_elsewhere_is_registered_by_url_and_joins(tmp_path: Path) -> None:
    """A catalog replica started by hand with `bazar serve` from a cluster file of its own
    (as on another host), then registered with `POST /admin/replicas {"url": ...}`: the front
    end takes its name from its health check, it catches up and turns in sync by itself
    under load, and ends identical to the others; nothing fails."""
    ledger = Ledger()
    with failover_cluster(tmp_path, ledger) as cluster:
        nemesis = Nemesis(cluster)
        port = free_port(span=1)
        node = Node(name="catalog-3", tier="catalog", host="127.0.0.1", port=port, managed=False)
        remote = tmp_path / "remote.toml"
        write_cluster(with_replica(load_cluster(cluster.data_dir / "cluster.toml"), node), remote)
        with served_by_hand(cluster, node.name, remote):
            register_under_load(cluster, ledger, nemesis, node)
            print(check_after_load(cluster, ledger))  # catalog-3 included, still running
        answers = [a.status for a in ledger.attempts()]
        assert set(answers) == {200}, f"purchase answers other than 200: {sorted(answers)[:10]}"
        check_load(ledger, nemesis.events)


def register_under_load(cluster: Cluster, ledger: Ledger, nemesis: Nemesis, node: Node) -> None:
    with failover_load(cluster, ledger):
        wait_until(lambda: listening(node.url), 20.0, f"{node.name} listening")
        wait_for_acks(ledger, ACKS_BETWEEN_CHANGES, 0.0, "before the registration")
        nemesis.mark(f"register {node.name} by url")
        body = {"service": "catalog", "url": node.url}
        status, reply = admin(cluster, "POST", "/admin/replicas", body)
        assert (status, reply["data"]["name"]) == (202, node.name), reply
        expect(
            lambda: listed(cluster, node.name, ("in_sync",)),
            JOIN_DEADLINE_S,
            f"{node.name} in sync by itself",
            lambda: str(cluster.cluster_info()["catalog"]),
        )
        joined = nemesis.mark(f"{node.name} in sync")
        wait_for_acks(ledger, ACKS_BETWEEN_CHANGES, joined.at_s, "with it in sync")
