"""Probes for integration tests: raw HTTP requests and snapshots of committed state.

`raw_request` goes through http.client because the bad requests these tests need have a
framing that urllib (behind `Cluster.request`) cannot produce: urllib adds a form Content-Type
to a body without one, `Cluster.request` frames every body with Content-Length and takes header
values as str only. Here a request carries exactly the headers it is given (raw bytes too:
non-ASCII, control characters) and its body is sent with Content-Length or chunked without it.

`snapshot` reads the committed state of every replica (books on each catalog replica, orders
on each order replica) and every replica's digest (each replicated table, idempotency records
included, and the log position `last_seq`, `commit_seq`) with the cluster secret, so that a
test can check that a request "changes nothing": the snapshot after it equals the one before
(`settled_snapshot`, taken once the replicas agree). A request that changes no row but writes
a log entry (e.g. records and then forgets an idempotency key) changes the snapshot too.

`assert_error` checks the one shape of every error answer (docs/contract.md §8).
"""

from __future__ import annotations

import http.client
import json
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from bazar.testing.cluster import Cluster, wait_until


class Reply(NamedTuple):
    """An HTTP answer: status, headers with lower-case names, raw body."""

    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


def raw_request(
    url: str,
    method: str,
    path: str,
    headers: list[tuple[str, str | bytes]] | None = None,
    body: bytes | None = None,
    *,
    chunked: bool = False,
) -> Reply:
    """One request through http.client, with exactly the given headers (plus Host and the
    body's framing): no Content-Type is added, a chunked body has no Content-Length."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers or []:
            connection.putheader(name, value)
        if chunked:
            connection.putheader("Transfer-Encoding", "chunked")
        elif body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        if body is not None:
            try:
                if chunked:
                    for start in range(0, len(body), 8192):
                        piece = body[start : start + 8192]
                        connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                    connection.send(b"0\r\n\r\n")
                else:
                    connection.send(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer (413) before it has read the whole body
        response = connection.getresponse()
        with response:
            return Reply(
                response.status,
                {name.lower(): value for name, value in response.getheaders()},
                response.read(),
            )
    finally:
        connection.close()


def assert_error(reply: Reply, status: int, code: str) -> None:
    """`reply` is exactly `{"error": {"code": code, "message": <text>}}` with `status`."""
    assert reply.status == status, (reply.status, reply.raw[:300])
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
    body = reply.json
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], dict), body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str), body
    assert body["error"]["message"].strip(), body


DIGESTS = "digests"
"""The key of `snapshot`'s digests: `{replica name: digest}`, beside the replicas' reads."""


def snapshot(
    cluster: Cluster, strict: bool = True, *, replicas: int | None = None
) -> dict[str, Any]:
    """The committed state of every replica, read with the cluster secret, by replica name,
    and under `DIGESTS` every replica's digest (`GET /internal/digest`: every replicated table
    and the log position), by replica name.
    Not `strict`: a replica that does not answer (yet) is recorded as its error instead.
    With `replicas`: there are exactly that many replicas in all."""
    info = cluster.cluster_info()
    state: dict[str, Any] = {}
    digests: dict[str, Any] = {}
    reads = [(r, "/books") for r in info["catalog"]["replicas"]]
    reads += [(r, "/orders?limit=1000") for r in info["order"]["replicas"]]
    for replica, path in reads:
        status, body = cluster.internal("GET", replica["url"], path)
        assert status == 200 or not strict, (replica["name"], status, body)
        state[replica["name"]] = body if status != 200 else body["data"]
        if path.startswith("/orders") and status == 200:
            assert body["next"] is None, "more than 1000 orders in one test module"
        status, body = cluster.internal("GET", replica["url"], "/internal/digest")
        assert status == 200 or not strict, (replica["name"], "digest", status, body)
        digests[replica["name"]] = {"status": status, "error": body} if status != 200 else body
    if replicas is not None:
        assert len(state) == replicas
    state[DIGESTS] = digests
    return state


def _tier_agrees(state: dict[str, Any], tier: str) -> bool:
    """Every replica of `tier` served its read and its digest, and all are equal."""
    names = [name for name in state if name.startswith(tier + "-")]
    reads = [state[name] for name in names]
    digests = [state[DIGESTS][name] for name in names]
    if not all(isinstance(read, list) for read in reads):
        return False  # an error body (or none): a replica that does not serve reads yet
    if any("error" in digest for digest in digests):
        return False
    if any(digest["last_seq"] != digest["commit_seq"] for digest in digests):
        return False  # an entry staged but not known committed: not quiescent
    return all(
        len({json.dumps(value, sort_keys=True) for value in values}) == 1
        for values in (reads, digests)
    )


def settled_snapshot(cluster: Cluster, *, replicas: int | None = None) -> dict[str, Any]:
    """`snapshot` once every replica serves reads and the replicas of each tier agree
    (quiescence, docs/contract.md §3.3): the same reads, the same digests (tables and log position),
    everything logged committed."""
    taken: list[dict[str, Any]] = []

    def agree() -> bool:
        state = snapshot(cluster, strict=False, replicas=replicas)
        taken[:] = [state]
        return all(_tier_agrees(state, tier) for tier in ("catalog", "order"))

    wait_until(agree, 10.0, "replicas of each tier serve reads and hold the same state")
    return taken[0]
