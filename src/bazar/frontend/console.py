"""The teaching console's fault routes (docs/contract.md §4, `bazar up --demo`): kill, pause,
resume and restart a replica from the web page, so that a class can watch failover and catch-up.

The front end does not touch processes itself: it asks the supervisor that runs them, over
its control socket (`control.py`). The routes exist only when `bazar up --demo` handed the
front end that socket; otherwise they are not routes at all (404), and the OpenAPI document
does not list them either (it describes what this front end serves). Switchover, add and
remove are the ordinary admin routes (`membership.py`); the page calls those directly.

Routes (admin token, docs/contract.md §8: 401 without it):
- `GET /admin/processes`: every replica `bazar up` runs, `running`, `paused` or `stopped`;
- `POST /admin/replicas/{name}/{action}`, action one of kill, pause, resume, restart: 200
  with the process's new state; 404 for an unknown name or action, 409 `not_running` to
  pause or resume a stopped one, 503 when the supervisor does not answer.
"""

from __future__ import annotations

import typing
from pathlib import Path

import msgspec
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bazar import control
from bazar.config import Secrets
from bazar.errors import BazarError, InvalidRequest, NotFound, NotRunning, Unavailable
from bazar.http_app import json_response, require_token
from bazar.wire import (
    ControlReply,
    ControlRequest,
    ProcessAction,
    ProcessData,
    ProcessListData,
    ProcessState,
)

ACTIONS: tuple[ProcessAction, ...] = typing.get_args(ProcessAction)
NAME_CHARS_MAX = 64
REFUSALS: dict[str, type[BazarError]] = {
    NotFound.code: NotFound,
    NotRunning.code: NotRunning,
    InvalidRequest.code: InvalidRequest,
}


class Console:
    def __init__(self, secrets: Secrets, control_socket: Path) -> None:
        self.secrets = secrets
        self.control_socket = control_socket

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/admin/processes", self.processes, methods=["GET"]),
            Route("/admin/replicas/{name}/{action}", self.act, methods=["POST"]),
        ]

    async def processes(self, request: Request) -> Response:
        require_token(request, self.secrets.admin_token, "admin token")
        reply = await self._ask(ControlRequest())
        return json_response(ProcessListData(data=reply.processes))

    async def act(self, request: Request) -> Response:
        require_token(request, self.secrets.admin_token, "admin token")
        name = request.path_params["name"]
        action = request.path_params["action"]
        if action not in ACTIONS:
            raise NotFound(f"no console action {action!r}; one of {', '.join(ACTIONS)}")
        if not 0 < len(name) <= NAME_CHARS_MAX:
            raise NotFound("no replica of that name")
        reply = await self._ask(ControlRequest(action=action, name=name))
        if len(reply.processes) != 1:
            raise Unavailable("the supervisor answered without the process's state")
        return json_response(ProcessData(data=reply.processes[0]))

    async def _ask(self, request: ControlRequest) -> ControlReply:
        """Raises: NotFound, NotRunning, InvalidRequest (the supervisor's refusals),
        Unavailable."""
        reply = await control.ask(self.control_socket, request)
        if reply.error is not None:
            refused = REFUSALS.get(reply.error.code, Unavailable)
            raise refused(reply.error.message)
        return reply


# ---------------------------------------------------------------- OpenAPI (only with --demo)


def with_console_paths(document: bytes) -> bytes:
    """The front end's OpenAPI document with the console's routes and schemas added."""
    parsed = orjson.loads(document)
    _, components = msgspec.json.schema_components(
        (ProcessData, ProcessListData, ProcessState),
        ref_template="#/components/schemas/{name}",
    )
    parsed["components"]["schemas"].update(components)
    parsed["paths"].update(console_paths())
    parsed["tags"].append(
        {
            "name": "console",
            "description": "Teaching console: only with `bazar up --demo` (else 404).",
        }
    )
    return orjson.dumps(parsed)


def _json(description: str, schema: str) -> dict[str, object]:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def console_paths() -> dict[str, object]:
    unauthorized = _json("Missing or wrong admin token (`unauthorized`).", "ErrorBody")
    unavailable = _json("The supervisor does not answer (`unavailable`).", "ErrorBody")
    return {
        "/admin/processes": {
            "get": {
                "operationId": "listProcesses",
                "tags": ["console"],
                "summary": "The replicas `bazar up` runs, as processes",
                "security": [{"admin": []}],
                "responses": {
                    "200": _json("Each replica: pid and state.", "ProcessListData"),
                    "401": unauthorized,
                    "503": unavailable,
                },
            }
        },
        "/admin/replicas/{name}/{action}": {
            "post": {
                "operationId": "actOnReplica",
                "tags": ["console"],
                "summary": "Kill (SIGKILL), pause (SIGSTOP), resume (SIGCONT) or restart a replica",
                "description": "A replica killed here stays down until restarted here. "
                "Restart stops it gracefully (if running) and starts it again.",
                "security": [{"admin": []}],
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "action",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": list(ACTIONS)},
                    },
                ],
                "responses": {
                    "200": _json("The process's new state.", "ProcessData"),
                    "401": unauthorized,
                    "404": _json("No such replica or action (`not_found`).", "ErrorBody"),
                    "409": _json("Pause or resume of a stopped one (`not_running`).", "ErrorBody"),
                    "503": unavailable,
                },
            }
        },
    }
