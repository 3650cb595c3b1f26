"""The approval gate on REST: an agent key's high-risk request is held there too, not only on `/mcp`.

An agent key reaches the REST API as well as the MCP server (the official `@insforge/mcp` calls REST), so
the requests that match a held tool are read as that tool's call: the same arguments, the same
`needs_approval` rule. When the rule holds the call, or the service finds once the call ran that it needs
a person (it rolled the call back and raised `HeldForApproval`, which the route's error handling leaves
alone), it becomes a change request (`approvals.py`) and the agent gets `202` with `pending_approval` and
the request's id; an approval runs the tool, as the agent, once.
A call the agent may not make at all (its scopes, read-only mode) is refused here with 403, as on `/mcp`,
rather than held: a person approving it would otherwise grant the key what its scopes deny. So is, with 400,
a call the gate would hold whose arguments its tool cannot take (`{"userIds": "abc"}`), as `/mcp` refuses
them: a person would be asked to approve a call that could only fail, described by what it was not.
Everything else, and every request by a person, passes untouched (one attribute check).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from kilnbase.capability import HeldForApproval
from kilnbase.http.buffered_body import read_all, read_at_most, replaying
from kilnbase.http.request_context import agent_in, client_ip_in, principal_in
from kilnbase.http.responses import json_response
from kilnbase.identity.actor import Actor
from kilnbase.identity.agent_keys import AgentKeys
from kilnbase.mcp_server.access import Listed, agent_refusal, session_of
from kilnbase.mcp_server.approvals import Approvals
from kilnbase.mcp_server.argument_errors import arguments_model, arguments_refusal
from kilnbase.messaging.definitions import FIELDS as MESSAGE_FIELDS
from kilnbase.storage.tools import MAX_HELD_BODY_BYTES, held_upload_arguments, held_upload_too_large

Arguments = Callable[[Mapping[str, str], Any], dict[str, Any]]


@dataclass(frozen=True)
class HeldRoute:
    method: str
    path: re.Pattern[str]
    tool: str
    #: The tool's arguments from the path's parameters and the JSON body.
    arguments: Arguments
    #: An upload, whose body is a file, not JSON: the path's arguments alone decide whether it is held (so
    #: an upload that is not held streams on untouched), and only then is the body read (at most
    #: `MAX_HELD_BODY_BYTES`) and made into the rest of the tool's arguments.
    upload: bool = False
    #: Held whatever its body (none is needed): the path alone makes the tool's arguments.
    bodiless: bool = False


def _route(
    method: str, path: str, tool: str, arguments: Arguments, *, upload: bool = False, bodiless: bool = False
) -> HeldRoute:
    """`{name}` matches one path segment, `{name:path}` the rest of the path (an object key), as in the
    routes themselves."""
    pattern = re.sub(r"\{(\w+):path\}", r"(?P<\1>.+)", path)
    pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
    return HeldRoute(method, re.compile(f"^{pattern}$"), tool, arguments, upload, bodiless)


def _body(body: Any) -> dict[str, Any]:
    return body if isinstance(body, dict) else {}


HELD_ROUTES = (
    _route("POST", "/api/database/advance/rawsql", "run-raw-sql",
           lambda p, b: {"query": _body(b).get("query"), "params": _body(b).get("params") or []}),
    # Owner-level SQL is held as the approval-only tool `run-owner-sql`: by its text as run-raw-sql's, or
    # once it ran and changed every row of a table.
    _route("POST", "/api/database/advance/rawsql/unrestricted", "run-owner-sql",
           lambda p, b: {"query": _body(b).get("query"), "params": _body(b).get("params") or []}),
    _route("POST", "/api/database/migrations", "apply-migration",
           lambda p, b: {k: _body(b).get(k) for k in ("version", "name", "sql")}),
    _route("DELETE", "/api/database/tables/{table}", "delete-table", lambda p, b: {"tableName": p["table"]}),
    _route("PATCH", "/api/database/tables/{table}/schema", "update-table-schema",
           lambda p, b: {"tableName": p["table"], "changes": _body(b)}),
    _route("DELETE", "/api/auth/users", "delete-users", lambda p, b: {"userIds": _body(b).get("userIds")}),
    _route("DELETE", "/api/storage/buckets/{bucket}", "delete-bucket",
           lambda p, b: {"bucketName": p["bucket"]}),
    _route("DELETE", "/api/storage/buckets/{bucket}/objects", "delete-objects",
           lambda p, b: {"bucketName": p["bucket"], "keys": _body(b).get("keys")}),
    _route("DELETE", "/api/storage/buckets/{bucket}/objects/{key:path}", "delete-objects",
           lambda p, b: {"bucketName": p["bucket"], "keys": [p["key"]]}),
    _route("PUT", "/api/storage/buckets/{bucket}/objects/{key:path}", "upload-object",
           lambda p, b: {"bucketName": p["bucket"], "key": p["key"]}, upload=True),
    _route("DELETE", "/api/functions/{slug}", "delete-function", lambda p, b: {"slug": p["slug"]}),
    _route("DELETE", "/api/realtime/channels/{id}", "delete-channel", lambda p, b: {"channelId": p["id"]}),
    _route("DELETE", "/api/realtime/messages", "purge-messages", lambda p, b: {}),
    _route("DELETE", "/api/secrets/{key}", "delete-secret", lambda p, b: {"key": p["key"]}),
    _route("DELETE", "/api/schedules/{id}", "delete-schedule", lambda p, b: {"id": p["id"]}),
    _route("POST", "/api/advisor/suppressions", "suppress-advisor-finding", lambda p, b: _body(b)),
    _route("POST", "/api/database/backups/{id}/restore", "restore-database-backup",
           lambda p, b: {"id": p["id"]}, bodiless=True),
    _route("DELETE", "/api/database/backups/{id}", "delete-database-backup", lambda p, b: {"id": p["id"]}),
    # An email to someone outside the project: an agent's waits for a person, as its tool call does.
    _route("POST", "/api/messaging/send", "send-message",
           lambda p, b: {k: v for k, v in _body(b).items() if k in MESSAGE_FIELDS}),
    _route("POST", "/api/messaging/dead-letter/{id}/retry", "retry-dead-letter-message",
           lambda p, b: {"id": p["id"]}, bodiless=True),
    # Not POST /api/database/advance/bulk-upsert: an agent's upload that updated every row is refused by the
    # service instead (`database.admin._agent_bulk_upsert_refused` says why), and sent to the `bulk-upsert`
    # tool, which is held.
)  # fmt: skip


class RestApprovalGate:
    def __init__(
        self, app: ASGIApp, approvals: Approvals, tools: Mapping[str, Listed], agent_keys: AgentKeys
    ) -> None:
        self.app = app
        self.approvals = approvals
        self.routes = [route for route in HELD_ROUTES if route.tool in tools]
        self.tools = tools
        self.agent_keys = agent_keys
        #: Each held tool's argument model, made when its first request comes.
        self._models: dict[str, type[BaseModel]] = {}

    def _match(self, scope: Scope) -> tuple[HeldRoute, dict[str, str]] | None:
        for route in self.routes:
            if route.method == scope["method"] and (found := route.path.match(scope["path"])):
                return route, found.groupdict()
        return None

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Not a coroutine: a request the gate does not hold is handed on as it is, so this layer is not
        one more frame that every resumption of the request's task passes through."""
        if scope["type"] != "http" or agent_in(scope) is None or (matched := self._match(scope)) is None:
            return self.app(scope, receive, send)
        return self._held(scope, receive, send, *matched)

    async def _held(
        self, scope: Scope, receive: Receive, send: Send, route: HeldRoute, path_params: dict[str, str]
    ) -> None:
        listed = self.tools[route.tool]
        principal = principal_in(scope)
        refusal = agent_refusal(principal, listed, self.agent_keys.read_only)
        if refusal is not None:
            raise refusal
        if route.upload:
            await self._held_upload(scope, receive, send, route, path_params)
            return
        raw = await read_all(receive)
        try:
            body = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            body = None  # the route answers the malformed body itself
        arguments = route.arguments(path_params, body)
        reason = None
        if body is not None or route.method == "DELETE" or route.bodiless:
            reason = await self._checked_reason(scope, listed, arguments)
        if reason is not None:
            await self._hold(scope, receive, send, route, arguments, reason)
            return
        try:
            await self.app(scope, replaying(raw, receive), send)
        except HeldForApproval as exc:
            # The service found, once it ran the call and rolled it back, that it needs a person.
            await self._hold(scope, receive, send, route, arguments, exc.reason)

    async def _checked_reason(self, scope: Scope, listed: Listed, arguments: dict[str, Any]) -> str | None:
        """Why the call waits for approval (None: it does not), once its arguments fit its tool; a call that
        would wait (or whose reason cannot be read from them) and does not fit is refused with 400. One
        that would not wait goes on to its route, which answers its body as for anyone."""
        name = listed.tool.name
        model = self._models.get(name) or self._models.setdefault(name, arguments_model(listed.tool))
        subject = f"{scope['method']} {scope['path']}, held for approval as {name}'s call, has"
        refusal = arguments_refusal(name, model, arguments, subject)
        if refusal is None:
            return await _reason(listed, arguments)
        try:
            reason = await _reason(listed, arguments)
        except Exception:  # (a reason read from arguments of the wrong kind: held, so refused)
            raise refusal from None
        if reason is not None:
            raise refusal
        return None

    async def _held_upload(
        self, scope: Scope, receive: Receive, send: Send, route: HeldRoute, path_params: dict[str, str]
    ) -> None:
        arguments = route.arguments(path_params, None)
        reason = await _reason(self.tools[route.tool], arguments)
        if reason is None:
            await self.app(scope, receive, send)
            return
        bucket, key = arguments["bucketName"], arguments["key"]
        raw = await read_at_most(receive, MAX_HELD_BODY_BYTES)
        if raw is None:
            raise held_upload_too_large(bucket, key)
        content_type = dict(scope["headers"]).get(b"content-type")
        claimed = content_type.decode("latin-1") if content_type is not None else None
        arguments = await held_upload_arguments(bucket, key, raw, claimed)
        await self._hold(scope, receive, send, route, arguments, reason)

    async def _hold(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: HeldRoute,
        arguments: dict[str, Any],
        reason: str,
    ) -> None:
        principal = principal_in(scope)
        actor = Actor(principal, ip=client_ip_in(scope), tool=route.tool)
        session = session_of(principal, dict(scope["headers"]).get(b"x-agent-session"))
        held = await self.approvals.request(actor, route.tool, arguments, reason, session)
        await json_response(held, status=202)(scope, receive, send)


async def _reason(listed: Listed, arguments: dict[str, Any]) -> str | None:
    """Why the tool's call with these arguments waits for approval (None: it does not)."""
    check = listed.tool.needs_approval
    reason = check(arguments) if check is not None else None
    if inspect.isawaitable(reason):
        reason = await reason
    return None if reason is None else str(reason)
