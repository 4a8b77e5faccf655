"""Starlette plumbing shared by every process: JSON responses and errors, request ids,
optional trailing slashes, bounded bodies, and the cluster-secret check.

Rule: every response is JSON (except the few pages the front end serves), every error has the
body `{"error": {"code", "message"}}` and the status of its `BazarError`; nothing reaches a
client as HTML or a traceback.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bazar import logs
from bazar.errors import (
    BazarError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)
from bazar.wire import ErrorBody, ErrorDetail, encode

T = TypeVar("T")

log = logging.getLogger("bazar.http")

JSON = "application/json"
REQUEST_ID = "x-request-id"
REQUEST_ID_CHARS_MAX = 200


def json_response(
    body: bytes | object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    content = body if isinstance(body, bytes) else encode(body)
    return Response(content, status_code=status, headers=headers, media_type=JSON)


def error_response(error: BazarError) -> Response:
    headers = dict(error.headers)
    if error.retry_after_s is not None:
        headers.setdefault("Retry-After", str(error.retry_after_s))
    body = ErrorBody(error=ErrorDetail(code=error.code, message=error.message))
    return json_response(body, error.status, headers)


async def _bazar_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, BazarError)
    return error_response(error)


async def _http_exception(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    if error.status_code == 405:
        allow = (error.headers or {}).get("Allow", "")
        return error_response(
            MethodNotAllowed(
                f"{request.method} is not allowed here; allowed: {allow}",
                headers={"Allow": allow},
            )
        )
    if error.status_code == 404:
        return error_response(NotFound(f"no route {request.url.path}"))
    generic = BazarError(str(error.detail))
    generic.status = error.status_code
    generic.code = "http_error"
    return error_response(generic)


async def _unexpected(request: Request, error: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(BazarError("internal error"))


class EdgeMiddleware:
    """Pure ASGI: strip one trailing slash (no redirect), echo or create `X-Request-Id`, and
    log the request's one line once it is answered (`logs.request_done`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        raw: bytes = scope.get("raw_path") or path.encode()
        if len(path) > 1 and path.endswith("/") and raw.endswith(b"/"):
            scope = dict(scope)  # one literal trailing slash; an encoded %2F is data
            scope["path"] = path[:-1]
        rid = request_id(scope)
        started_s = time.perf_counter()
        status: int | None = None
        notes: dict[str, object] = {}
        token = logs.REQUEST_NOTES.set(notes)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logs.REQUEST_NOTES.reset(token)
            logs.request_done(rid, scope["method"], path, status, started_s, notes)


def request_id(scope: Scope) -> bytes:
    """The client's `X-Request-Id` when it is printable ASCII of sane length, else a new one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if 0 < len(text) <= REQUEST_ID_CHARS_MAX and text.isascii() and text.isprintable():
                return bytes(value)
            break
    return os.urandom(16).hex().encode()  # (a random UUID's 128 bits, a third of its cost)


def build_app(
    routes: Sequence[BaseRoute],
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
    measure: Callable[[ASGIApp], ASGIApp] | None = None,
) -> ASGIApp:
    """The Starlette app behind `EdgeMiddleware`; `measure` (the metrics middleware) wraps
    the app itself, where the scope still carries the route the router matched."""
    app = Starlette(
        routes=list(routes),
        lifespan=lifespan,
        exception_handlers={
            BazarError: _bazar_error,
            HTTPException: _http_exception,
            Exception: _unexpected,
        },
    )
    app.router.redirect_slashes = False
    return EdgeMiddleware(app if measure is None else measure(app))


async def read_body(request: Request, limit_bytes: int) -> bytes:
    """The whole body, refusing more than `limit_bytes` (chunked bodies included).

    Raises: PayloadTooLarge.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise PayloadTooLarge(f"the body is larger than {limit_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise PayloadTooLarge(f"the body is larger than {limit_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return token.strip()


def require_token(request: Request, expected: str, what: str) -> None:
    """Raises: Unauthorized unless the request carries `Authorization: Bearer <expected>`."""
    token = bearer_token(request)
    if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthorized(f"this route requires the {what}")


async def decode_body(request: Request, kind: type[T], limit_bytes: int) -> T:
    """Raises: InvalidRequest, PayloadTooLarge."""
    body = await read_body(request, limit_bytes)
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as error:
        raise InvalidRequest(f"bad {kind.__name__}: {error}") from None
