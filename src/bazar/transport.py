"""Calls between processes: one aiohttp session per process, keep-alive, a timeout on every
call, and the cluster secret on every request.

A failure is a `TransportError`; `definite` is True only when the request cannot have reached
the peer (the connection was refused), so callers never report a definite error for a write
whose outcome is unknown.
"""

from __future__ import annotations

import logging
from typing import TypeVar

import aiohttp
import msgspec

from bazar.errors import ERRORS_BY_CODE, BazarError
from bazar.wire import ErrorBody, encode

T = TypeVar("T")

log = logging.getLogger("bazar.transport")
CONNECTIONS_MAX = 256  # a process's connections to all its peers together (aiohttp's pool)
_error_decoder = msgspec.json.Decoder(ErrorBody)


class TransportError(Exception):
    def __init__(self, message: str, *, definite: bool) -> None:
        super().__init__(message)
        self.definite = definite


class Transport:
    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=CONNECTIONS_MAX, keepalive_timeout=60, ttl_dns_cache=None
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"Authorization": f"Bearer {self._secret}"},
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self,
        method: str,
        url: str,
        reply_type: type[T],
        *,
        timeout_ms: int,
        body: object | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> T:
        """One request; a 2xx body decodes as `reply_type`, a JSON error as its BazarError.

        Raises: TransportError (no usable answer), BazarError (the peer's error).
        """
        session = self._session
        assert session is not None, "Transport.start() first"
        data = encode(body) if body is not None else raw
        send_headers = {"Content-Type": "application/json"} if body is not None else {}
        if raw is not None:
            send_headers["Content-Type"] = "application/octet-stream"
        send_headers.update(headers or {})
        timeout = aiohttp.ClientTimeout(total=timeout_ms / 1000)
        try:
            async with session.request(
                method, url, data=data, headers=send_headers, timeout=timeout
            ) as response:
                payload = await response.read()
                status = response.status
        except aiohttp.ClientConnectorError as error:
            raise TransportError(f"{url}: {error}", definite=True) from error
        except (aiohttp.ClientError, TimeoutError) as error:
            raise TransportError(
                f"{url}: {type(error).__name__} {error}", definite=False
            ) from error
        if 200 <= status < 300:
            try:
                return msgspec.json.decode(payload, type=reply_type)
            except msgspec.DecodeError as error:
                raise TransportError(f"{url}: bad reply: {error}", definite=False) from error
        raise _peer_error(url, status, payload)


def _peer_error(url: str, status: int, payload: bytes) -> BazarError | TransportError:
    try:
        detail = _error_decoder.decode(payload).error
    except msgspec.DecodeError:
        return TransportError(f"{url}: HTTP {status}", definite=False)
    error_class = ERRORS_BY_CODE.get(detail.code)
    if error_class is None:
        return TransportError(f"{url}: HTTP {status} {detail.code}", definite=False)
    return error_class(detail.message)
