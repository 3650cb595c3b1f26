"""The MCP server over the capabilities' tools, built on the official `mcp` SDK (`MCPServer`).

Each tool is a capability's `Tool`: the server calls its service directly (no HTTP round trip) as the
caller's `Actor`, so the call runs under the caller's role and RLS and the service writes its own audit entry.
Around every call this module adds what belongs to the MCP surface alone: who may see and call which tool
(`access.py`), one audit entry per call (tool, masked arguments, outcome, duration), a bound on the result's
size, and errors in the words the HTTP API uses (`{error, message, nextActions}`).

The caller is the credential of the HTTP request that carried the call (`/mcp`, resolved by the edge
middleware like any request) or, over stdio, the credential the command was started with.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from functools import partial
from typing import Annotated, Any, Literal

import orjson
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, INVALID_REQUEST, CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from kilnbase import audit
from kilnbase.capability import Capability, Core, HeldForApproval, Tool
from kilnbase.db.idempotency import MAX_KEY_LENGTH, IdempotencyKeys, Stored, request_digest
from kilnbase.http.errors import ApiError
from kilnbase.http.request_context import client_ip_in, principal_in
from kilnbase.identity.actor import Actor
from kilnbase.identity.agent_keys import AgentKeys
from kilnbase.identity.principal import CredentialError, CredentialKind, KeysToFetch, Principal
from kilnbase.mcp_server.access import (
    EVERYTHING,
    Listed,
    ListedResource,
    Narrowing,
    UnknownFeatureGroups,
    agent_refusal,
    hidden_reason,
    resource_visible,
    session_of,
    visible,
)
from kilnbase.mcp_server.approvals import Approvals
from kilnbase.mcp_server.argument_errors import ArgumentCheck, nul_characters
from kilnbase.mcp_server.results import bounded_text, masked_arguments, summary
from kilnbase.mcp_server.text_arguments import keep_text_arguments
from kilnbase.mcp_server.tool_routes import for_tools

MODULE = "MCP"
log = logging.getLogger("kilnbase.mcp")
INSTRUCTIONS = (
    "Kilnbase: an InsForge-compatible backend (Postgres with RLS, a PostgREST-style records API, auth, "
    "a model gateway). Tools act as your credential; Row Level Security decides what they see. Read the "
    "schema before changing it; prefer migrations (dry-run first) to raw SQL for DDL."
)

#: A tool's work, started by `_idempotent` when it is the first call with its key.
Run = Callable[[], Awaitable[str]]

#: How a connection's narrowing is found: from the HTTP request's query (`/mcp?read_only=true&features=
#: database,auth`), or fixed for a stdio server.
NarrowingOf = Callable[[Mapping[str, Any] | None], Narrowing]


#: The header an agent (or its harness) may send to name its session, for replay; at most 100 characters.
SESSION_HEADER = "x-agent-session"


@dataclass(frozen=True)
class Call:
    """Who is calling, from where, what their connection narrows to, and which session the call belongs to
    (calls of one session replay together: `kilnbase audit replay`)."""

    principal: Principal
    ip: str | None
    user_agent: str | None
    narrowing: Narrowing
    session: str


class Caller:
    """Turns the SDK's request context into a `Call`."""

    def __init__(
        self,
        agent_keys: AgentKeys,
        stdio_principal: Callable[[], Principal] | None,
        stdio_narrowing: Narrowing,
        feature_groups: Collection[str],
    ) -> None:
        self.agent_keys = agent_keys
        #: The groups `?features=` may name.
        self.feature_groups = feature_groups
        #: Resolved again on every call, so a credential that expires, is revoked or whose session is
        #: signed out stops working mid-session, as it would over HTTP.
        self.stdio_principal = stdio_principal
        self.stdio_narrowing = stdio_narrowing
        #: Every call of one `kilnbase mcp` process is one session.
        self.stdio_session = f"stdio-{uuid.uuid4()}"

    async def of(self, request: Any) -> Call:
        scope = getattr(request, "scope", None)
        if scope is None:  # stdio: one local agent, the credential the command was started with
            if self.stdio_principal is None:
                raise MCPError(
                    INVALID_REQUEST, "No credential: start `kilnbase mcp` with --api-key or KILNBASE_API_KEY."
                )
            try:
                try:
                    principal = self.stdio_principal()
                except KeysToFetch as pending:  # (an external provider's keys, fetched as HTTP does)
                    principal = await pending.resolved()
            except CredentialError as exc:
                raise MCPError(
                    INVALID_REQUEST,
                    f"The credential `kilnbase mcp` was started with is no longer valid ({exc}): "
                    "restart it with a current one (--api-key or KILNBASE_API_KEY).",
                ) from exc
            call = Call(principal, None, "mcp-stdio", self.stdio_narrowing, self.stdio_session)
        else:
            query = request.query_params
            narrowing = Narrowing.parse(
                query.get("read_only", "").lower() in ("1", "true", "yes"),
                query["features"].split(",") if "features" in query else None,
            )
            try:
                narrowing.check_groups(self.feature_groups)
            except UnknownFeatureGroups as exc:
                raise MCPError(INVALID_PARAMS, f"?features=: {exc}.") from None
            principal = principal_in(scope)
            session = session_of(principal, request.headers.get(SESSION_HEADER))
            call = Call(principal, client_ip_in(scope), request.headers.get("user-agent"), narrowing, session)
        if call.principal.agent is not None and self.agent_keys.read_only:  # the project's read-only mode
            return replace(call, narrowing=Narrowing(read_only=True, groups=call.narrowing.groups))
        return call


class ToolAccessMiddleware:
    """Hides from `tools/list` what the caller may not use, and refuses a `tools/call` of such a tool
    before it runs (so a hidden tool cannot be called by name: the call is refused with the reason), or one
    with arguments the tool does not take (`unknown_arguments`), that do not fit its schema or hold a number
    JSON cannot carry (`checked`) or that hold text the database cannot store (`nul_characters`)."""

    def __init__(self, listed: Mapping[str, Listed], caller: Caller, checked: ArgumentCheck) -> None:
        self.listed = listed
        self.caller = caller
        self.checked = checked
        #: The arguments each tool takes.
        self.taken = {name: [p.name for p in tool_parameters(entry.tool)] for name, entry in listed.items()}

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method not in ("tools/list", "tools/call"):
            return await call_next(ctx)
        try:
            call = await self.caller.of(ctx.request)
        except MCPError as exc:
            if ctx.method != "tools/call":
                raise
            # An agent reads a tool's error text; a protocol error would hide why the call failed.
            return CallToolResult(content=[TextContent(type="text", text=exc.error.message)], is_error=True)
        principal, narrowing = call.principal, call.narrowing
        if ctx.method == "tools/call":
            name = str((ctx.params or {}).get("name", ""))
            entry = self.listed.get(name)
            if entry is None or not entry.tool.offered:
                offered = [
                    n for n, e in self.listed.items() if e.tool.offered and visible(principal, narrowing, e)
                ]
                return CallToolResult(
                    content=[TextContent(type="text", text=unknown_tool(name, offered))], is_error=True
                )
            if not visible(principal, narrowing, entry):
                read_only_mode = self.caller.agent_keys.read_only
                return _refused(name, hidden_reason(principal, narrowing, entry, read_only_mode))
            arguments = (ctx.params or {}).get("arguments")
            refusal = (
                unknown_arguments(name, self.taken[name], arguments)
                or self.checked.refusal(name, arguments)
                or nul_characters(name, arguments)
            )
            if refusal is not None:
                return _refused(name, refusal)
            return await call_next(ctx)
        result = await call_next(ctx)  # the wire form: {"tools": [{"name": ...}, ...], ...}
        if isinstance(result, dict) and isinstance(result.get("tools"), list):
            allowed = {name for name, entry in self.listed.items() if visible(principal, narrowing, entry)}
            result["tools"] = [t for t in result["tools"] if t.get("name") in allowed]
        return result


#: The caller of the `resources/read` being answered (set by `ResourceAccessMiddleware`: the SDK gives a
#: static resource's function no context).
_RESOURCE_CALL: ContextVar[Call | None] = ContextVar("kilnbase_mcp_resource_call", default=None)


class ResourceAccessMiddleware:
    """Lists only the resources the caller may read, and remembers who reads one while it is read."""

    def __init__(self, listed: Sequence[ListedResource], caller: Caller) -> None:
        self.listed = listed
        self.caller = caller

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "resources/read":
            token = _RESOURCE_CALL.set(await self.caller.of(ctx.request))
            try:
                return await call_next(ctx)
            finally:
                _RESOURCE_CALL.reset(token)
        if ctx.method not in ("resources/list", "resources/templates/list"):
            return await call_next(ctx)
        call = await self.caller.of(ctx.request)
        allowed = {e.resource.uri for e in self.listed if resource_visible(call.principal, call.narrowing, e)}
        result = await call_next(ctx)
        if isinstance(result, dict):
            for field, uri in (("resources", "uri"), ("resourceTemplates", "uriTemplate")):
                if isinstance(result.get(field), list):
                    result[field] = [r for r in result[field] if r.get(uri) in allowed]
        return result


def resource_reader(entry: ListedResource) -> Callable[..., Awaitable[str]]:
    """The function the SDK calls to read `entry`: its URI's parts as keyword arguments, the caller from
    `_RESOURCE_CALL`; a refusal in the API's words.

    A client's mistake (a table that does not exist, a resource the caller may not read) is the protocol's
    invalid params (-32602), as the SDK answers a URI no resource matches; only the server's own failure is
    an internal error (-32603), what the SDK makes of a `ResourceError`."""
    parts = re.findall(r"\{(\w+)\}", entry.resource.uri)

    async def read(**arguments: str) -> str:
        uri = entry.resource.uri.format(**arguments)
        call = _RESOURCE_CALL.get()
        if call is None or not resource_visible(call.principal, call.narrowing, entry):
            raise MCPError(INVALID_PARAMS, f"Unknown resource: {uri}", {"uri": uri})
        actor = Actor(call.principal, ip=call.ip, user_agent=call.user_agent, tool=entry.resource.name)
        try:
            return await entry.resource.read(actor, **arguments)
        except ApiError as exc:
            if exc.status >= 500:
                raise ResourceError(_error_text(exc)) from None
            raise MCPError(INVALID_PARAMS, _error_text(exc), {"uri": uri}) from None

    read.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(part, inspect.Parameter.KEYWORD_ONLY, annotation=str) for part in parts],
        return_annotation=str,
    )
    read.__annotations__ = {part: str for part in parts} | {"return": str}
    read.__name__ = entry.resource.name.replace("-", "_")
    return read


def _refused(tool: str, exc: ApiError) -> CallToolResult:
    """A call refused before it ran, worded as the SDK words a tool's own error."""
    text = f"Error executing tool {tool}: {_error_text(exc)}"
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _error_text(exc: ApiError) -> str:
    """The API's error body; its advice names the tool, not the route, where a tool does the work."""
    body: dict[str, Any] = {"error": exc.code, "message": exc.message, "statusCode": exc.status}
    if exc.next_actions:
        body["nextActions"] = for_tools(exc.next_actions)
    return orjson.dumps(body).decode()


IDEMPOTENCY_ARGUMENT = "idempotencyKey"
_IDEMPOTENCY_PARAMETER = inspect.Parameter(
    IDEMPOTENCY_ARGUMENT,
    inspect.Parameter.KEYWORD_ONLY,
    default=None,
    annotation=Annotated[
        str | None,
        Field(
            description="The same value retries this call safely: within 24 h it returns the first result",
            min_length=1,
            max_length=MAX_KEY_LENGTH,
        ),
    ],
)


SCHEMA_VERSION_ARGUMENT = "expectedSchemaVersion"
_SCHEMA_VERSION_PARAMETER = inspect.Parameter(
    SCHEMA_VERSION_ARGUMENT,
    inspect.Parameter.KEYWORD_ONLY,
    default=None,
    annotation=Annotated[
        str | None,
        Field(
            description="schemaFingerprint from get-backend-metadata: refused if the schema changed since",
            min_length=1,
            max_length=64,
        ),
    ],
)
#: The schema's current fingerprint, as the caller may read it.
Fingerprint = Callable[[Actor], Awaitable[str]]


def tool_parameters(tool: Tool) -> list[inspect.Parameter]:
    """The arguments a tool takes: its `run`'s, without the actor; with `idempotencyKey` and
    `expectedSchemaVersion` when it changes something."""
    parameters = list(inspect.signature(tool.run, eval_str=True).parameters.values())[1:]
    if not tool.read_only:
        parameters += [_IDEMPOTENCY_PARAMETER, _SCHEMA_VERSION_PARAMETER]
    return parameters


#: Taken by every tool of `@insforge/mcp` (the key to call with), so an agent prompt written for InsForge may
#: pass it; here the call's own credential decides, and the argument is dropped unread.
INSFORGE_API_KEY_ARGUMENT = "apiKey"


def unknown_arguments(tool: str, taken: Sequence[str], arguments: Any) -> ApiError | None:
    """The refusal of arguments that `tool` (which takes `taken`) does not take; None: it takes them all.

    The SDK's validation drops what a tool does not declare, so a misnamed optional argument would be
    ignored without a word: `create-bucket {"public": false}` would make a public bucket. An agent must
    hear that its argument was not read, and what the tool takes instead."""
    if not isinstance(arguments, Mapping):
        return None
    unknown = [str(name) for name in arguments if name not in taken and name != INSFORGE_API_KEY_ARGUMENT]
    if not unknown:
        return None
    return ApiError(
        400,
        "INVALID_INPUT",
        f"{tool} does not take {', '.join(_with_guess(name, taken) for name in unknown)}; nothing was done.",
        f"Call it again with only the arguments it takes: {', '.join(taken) or 'none'}.",
    )


#: How much of an unknown tool's name its refusal repeats (and looks for a near match of).
_SHOWN_NAME_CHARS = 100


def unknown_tool(name: str, offered: Sequence[str]) -> str:
    """The text of a call of a tool the server does not offer: the name (cut, so that a huge one is not
    echoed back whole), the nearest tool this caller may call, and where the others are listed; the SDK's
    bare "Unknown tool: x" left a misspelt name with no way on."""
    if len(name) > _SHOWN_NAME_CHARS:
        return f"Unknown tool: {name[:_SHOWN_NAME_CHARS]}… (tools/list lists the tools you may call)"
    close = difflib.get_close_matches(name, offered, n=1, cutoff=0.6)
    guess = f"did you mean {close[0]}? " if close else ""
    return f"Unknown tool: {name} ({guess}tools/list lists the tools you may call)"


def _with_guess(name: str, taken: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, taken, n=1, cutoff=0.5)
    return f"{name} (did you mean {close[0]}?)" if close else name


async def _idempotent(
    keys: IdempotencyKeys,
    owner: str,
    key: str,
    tool: str,
    arguments: dict[str, Any],
    run: Run,
    check: Callable[[], Awaitable[None]] | None = None,
) -> str:
    """Run a mutating tool once per (credential, key): a retry gets the first result (or error) back.

    `check` (the schema version the call names) is asked only of a first call, once the key is claimed: a
    retry is the same call, answered as it was, though the change it made moved the schema past that
    version; and a call it refuses keeps nothing under the key, so the call with the current version runs."""
    digest = request_digest(
        b"tool", tool.encode(), orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS, default=str)
    )
    stored_key = f"mcp:{key}"
    claim = await keys.claim(owner, stored_key, digest)
    if claim.outcome == "mismatch":
        raise ApiError(
            409,
            "IDEMPOTENCY_KEY_REUSED",
            "This idempotencyKey was used with a different call.",
            "Use a new idempotencyKey for a different call; repeat a call with its own key to get its "
            "result.",
        )
    if claim.outcome == "running":
        raise ApiError(
            409,
            "IDEMPOTENCY_KEY_IN_USE",
            "A call with this idempotencyKey is still running.",
            "Wait for that call to finish, then repeat it with the same idempotencyKey to get its result.",
        )
    if claim.outcome == "lost":
        raise ApiError(
            409,
            "IDEMPOTENCY_RESPONSE_LOST",
            "The call with this idempotencyKey ran, but its result can no longer be read: the server's "
            "ENCRYPTION_KEY changed since.",
            "Check what the first call did (read what it created or changed) rather than repeating it; use "
            "a new idempotencyKey only to make the call again.",
        )
    if claim.stored is not None:
        if claim.stored.status == 200:
            return claim.stored.body.decode()
        raise ToolError(claim.stored.body.decode())
    if check is not None:
        try:
            await check()
        except BaseException:
            await keys.release(owner, stored_key)
            raise
    try:
        text = await run()
    except ApiError as exc:
        if exc.status >= 500:
            await keys.release(owner, stored_key)
        else:
            await keys.save(owner, stored_key, Stored(exc.status, [], _error_text(exc).encode()))
        raise
    except BaseException:
        await keys.release(owner, stored_key)
        raise
    await keys.save(owner, stored_key, Stored(200, [], text.encode()))
    return text


class ToolRunner:
    """Runs tool calls: the approval gate for agents, the call itself, its audit entry, the result's bound.
    Live calls come through `adapt`; approved change requests through `execute` (past the gate)."""

    def __init__(
        self,
        listed: Mapping[str, Listed],
        caller: Caller,
        core: Core,
        approvals: Approvals,
        fingerprint: Fingerprint,
    ) -> None:
        self.fingerprint = fingerprint
        self.listed = listed
        self.caller = caller
        self.database = core.database
        self.keys = IdempotencyKeys(core.database, core.secret_box)
        self.rate_limiter = core.rate_limiter
        self.calls_per_minute = core.settings.mcp.tool_calls_per_minute
        self.approvals = approvals
        approvals.runs_with(self.execute)

    async def _check_schema(self, actor: Actor, expected: str) -> None:
        current = await self.fingerprint(actor)
        if current != expected:
            raise ApiError(
                409,
                "SCHEMA_CHANGED",
                f"The schema changed since you read it: expected version {expected}, it is now {current}.",
                "Read the schema again (get-backend-metadata or describe-table), then retry with "
                f"expectedSchemaVersion {current} if the call still makes sense.",
            )

    async def _count(self, principal: Principal, ip: str | None) -> None:
        """One tool call against the caller's minute. A caller is its credential; a credential with no user
        and no agent key behind it, other than the API key, is the anon key: every visitor's, so there a
        caller is also its address, and one visitor's calls do not use up everyone's."""
        bucket = f"mcp-tools:{principal.credential_id}"
        shared = principal.user_id is None and principal.agent is None
        if shared and principal.kind is not CredentialKind.API_KEY:
            bucket += f":{ip or ''}"
        retry_after = await self.rate_limiter.hit(bucket, self.calls_per_minute, 60)
        if retry_after is not None:
            raise ApiError(
                429,
                "RATE_LIMITED",
                f"Too many tool calls: {self.calls_per_minute} a minute per credential.",
                f"Retry in {max(1, round(retry_after))} s (the limit: KILNBASE_MCP_TOOL_CALLS_PER_MINUTE).",
            )

    async def execute(self, name: str, actor: Actor, arguments: dict[str, Any], session: str) -> str:
        """An approved change request's call: as its agent may make it now, past the gate."""
        listed = self.listed[name]
        refusal = agent_refusal(actor.principal, listed, self.caller.agent_keys.read_only)
        if refusal is not None:
            raise refusal
        return await self._run(listed.tool, actor, arguments, session=session, gated=False)

    async def _run(
        self, tool: Tool, actor: Actor, arguments: dict[str, Any], *, session: str, gated: bool = True
    ) -> str:
        if gated and actor.principal.agent is not None and tool.needs_approval is not None:
            reason = tool.needs_approval(arguments)
            if inspect.isawaitable(reason):
                reason = await reason
            if reason is not None:
                held = await self.approvals.request(actor, tool.name, arguments, reason, session)
                return bounded_text(held)
        started = time.perf_counter()
        details: dict[str, Any] = {
            "tool": tool.name,
            "arguments": masked_arguments(arguments),
            "session": session,
            "write": not tool.read_only,
        }
        try:
            result = await tool.run(actor, **arguments)
        except HeldForApproval as exc:
            # Found to need a person only once it ran (and rolled back): held as the gate above holds.
            held = await self.approvals.request(actor, tool.name, arguments, exc.reason, session)
            return bounded_text(held)
        except ApiError as exc:
            details |= {"error": exc.message, "durationMs": _ms(started)}
            await audit.record(self.database, actor, "TOOL_CALL", MODULE, details, outcome="failed")
            raise
        except Exception as exc:
            # A fault of ours: logged with its traceback, audited as failed like any failed call, and
            # told to the agent as the HTTP edge tells a 500 (the SDK's own text gives no reason at all).
            log.error("tool %s failed unexpectedly", tool.name, exc_info=exc)
            details |= {"error": f"unexpected {type(exc).__name__}", "durationMs": _ms(started)}
            await audit.record(self.database, actor, "TOOL_CALL", MODULE, details, outcome="failed")
            raise ApiError(
                500,
                "INTERNAL_ERROR",
                f"{tool.name} failed on an unexpected error of the server's; it has been logged.",
                "This is the server's fault, not the arguments': retry later; if it persists, the server "
                "log says why.",
            ) from None
        text = bounded_text(result)
        # A result's secret-looking fields (a new key's `apiKey`) are masked in the audit, as arguments are.
        kept = bounded_text(masked_arguments(result)) if isinstance(result, dict) else text
        details |= {"durationMs": _ms(started), "resultSummary": summary(kept)}
        await audit.record(self.database, actor, "TOOL_CALL", MODULE, details)
        return text

    def adapt(self, entry: Listed) -> Callable[..., Any]:
        """A function with the tool's own parameters (without `actor`; with `idempotencyKey` for a mutating
        tool) plus the SDK's context, for `MCPServer.add_tool`."""
        tool = entry.tool
        signature = inspect.signature(tool.run, eval_str=True)
        parameters = tool_parameters(tool)

        async def call(ctx: Context, **arguments: Any) -> str:
            who = await self.caller.of(ctx.request_context.request)
            principal = who.principal
            actor = Actor(principal, ip=who.ip, user_agent=who.user_agent, tool=tool.name)
            key = arguments.pop(IDEMPOTENCY_ARGUMENT, None)
            expected = arguments.pop(SCHEMA_VERSION_ARGUMENT, None)
            check = None if expected is None else partial(self._check_schema, actor, expected)
            try:
                await self._count(principal, who.ip)
                if key is None:
                    if check is not None:
                        await check()
                    return await self._run(tool, actor, arguments, session=who.session)
                owner = principal.credential_id
                run = partial(self._run, tool, actor, arguments, session=who.session)
                return await _idempotent(self.keys, owner, key, tool.name, arguments, run, check)
            except ApiError as exc:
                raise ToolError(_error_text(exc)) from None

        context = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)
        call.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*parameters, context], return_annotation=str
        )
        call.__annotations__ = {p.name: p.annotation for p in parameters} | {"ctx": Context, "return": str}
        call.__name__ = tool.name.replace("-", "_")
        return call


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def approval_tools(approvals: Approvals) -> Capability:
    """The change requests an agent made, for it to poll (group `approvals`)."""

    async def get_request(actor: Actor, changeRequestId: str) -> dict[str, Any]:
        return await approvals.get(actor, changeRequestId)

    async def list_requests(
        actor: Actor,
        status: Literal["pending", "running", "done", "failed", "rejected", "expired"] | None = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 20,
    ) -> list[dict[str, Any]]:
        return await approvals.list_requests(actor, status, limit)

    return Capability(
        "approvals",
        (),
        tools=[
            Tool(
                "get-change-request",
                "A held change request: its status and, once run, its result.",
                get_request,
            ),
            Tool(
                "list-change-requests",
                "This agent key's change requests awaiting or past approval, newest first.",
                list_requests,
            ),
        ],
    )


def build_server(
    offered: Sequence[Capability],
    core: Core,
    approvals: Approvals,
    fingerprint: Fingerprint,
    *,
    stdio_principal: Callable[[], Principal] | None = None,
    stdio_narrowing: Narrowing = EVERYTHING,
) -> MCPServer:
    """One MCP server with every capability's tools; the caller decides, per call, what is visible."""
    groups = [*offered, approval_tools(approvals)]
    listed = {tool.name: Listed(capability.name, tool) for capability in groups for tool in capability.tools}
    resources = [
        ListedResource(capability.name, resource, capability.agent_scoped)
        for capability in offered
        for resource in capability.resources
    ]
    feature_groups = {entry.group for entry in listed.values()} | {entry.group for entry in resources}
    stdio_narrowing.check_groups(feature_groups)
    caller = Caller(core.agent_keys, stdio_principal, stdio_narrowing, feature_groups)
    runner = ToolRunner(listed, caller, core, approvals, fingerprint)
    checked = ArgumentCheck()
    server: MCPServer = MCPServer(
        "kilnbase",
        instructions=INSTRUCTIONS,
        middleware=[
            ToolAccessMiddleware(listed, caller, checked),
            ResourceAccessMiddleware(resources, caller),
        ],
        warn_on_duplicate_tools=True,
    )
    for resource_entry in resources:
        server.resource(
            resource_entry.resource.uri,
            name=resource_entry.resource.name,
            description=resource_entry.resource.description,
            mime_type=resource_entry.resource.mime_type,
        )(resource_reader(resource_entry))
    for entry in listed.values():
        if not entry.tool.offered:
            continue  # (in `listed` still: an approval runs it)
        server.add_tool(
            runner.adapt(entry),
            name=entry.tool.name,
            description=entry.tool.description,
            annotations=ToolAnnotations(
                read_only_hint=entry.tool.read_only, destructive_hint=not entry.tool.read_only
            ),
            structured_output=False,
        )
    checked.learn(keep_text_arguments(server))
    return server


def catalogue(offered: Sequence[Capability]) -> list[tuple[str, Tool]]:
    """Every tool with its feature group, in the app's order (for docs and `kilnbase mcp --list`)."""
    return [(capability.name, tool) for capability in offered for tool in capability.tools if tool.offered]
