"""The interface between the app and its capabilities: what each is given (`Core`), what it gives back
(`Capability`).

`Core` is what a running server holds that every capability may use, built once at startup with no optional
fields: settings, keys, tokens, the secret box, the database, the schema cache, the rate limiter, and the
views of ended sessions, live agent keys and external JWT providers that the credential resolver consults.
A capability builds its service from it, then offers a `Capability`: its routes, its lifespan (started in
the app's order, stopped in reverse, through one exit stack), its background work and its MCP tools.
`app.py` is the list of them.

Two kinds of process enter capabilities: the server (`kilnbase serve`, and every app `create_app` builds),
and a tool process (`kilnbase mcp` over stdio, which an editor starts and stops with a session). The
`lifespan` is what any process needs to serve the calls it takes itself (pools, caches kept fresh, the
function runtime, delivering what its calls publish, flushing its own log lines). The `background` is work
on the process's own clock, done for the whole project by whichever server process gets to it (scheduled
HTTP calls, periodic sweeps and pruning): only the server enters it, so an editor's process makes no
scheduled calls and deletes nothing on its own.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.routing import BaseRoute

from kilnbase.config import Settings
from kilnbase.db.schema_cache import SchemaCache
from kilnbase.db.session import Database
from kilnbase.http.rate_limit import RateLimiter
from kilnbase.identity.agent_keys import AgentKeys
from kilnbase.identity.ended_sessions import EndedSessions
from kilnbase.identity.external_tokens import ExternalTokens
from kilnbase.keys.access_tokens import TokenService
from kilnbase.keys.column_cipher import ColumnCipher
from kilnbase.keys.project_keys import ProjectKeys
from kilnbase.keys.secret_box import SecretBox

#: Which body limit of the settings applies to a path: JSON APIs, the model gateway, file uploads.
BodySurface = Literal["json", "gateway", "upload"]


@dataclass(frozen=True)
class Core:
    settings: Settings
    keys: ProjectKeys
    tokens: TokenService
    secret_box: SecretBox
    #: The keys of encrypted columns (derived from the project's encryption key, one per key version).
    column_cipher: ColumnCipher
    database: Database
    schema_cache: SchemaCache
    rate_limiter: RateLimiter
    ended_sessions: EndedSessions
    agent_keys: AgentKeys
    external_tokens: ExternalTokens
    started_at: float = field(default_factory=time.time)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Open the pools, start the schema cache and the ended-sessions listener; stop them, in reverse,
        on the way out."""
        async with contextlib.AsyncExitStack() as stack:
            await self.database.open()
            stack.push_async_callback(self.database.close)
            stack.push_async_callback(self.rate_limiter.close)
            await self.schema_cache.start()
            stack.push_async_callback(self.schema_cache.stop)
            await self.ended_sessions.start()
            stack.push_async_callback(self.ended_sessions.stop)
            await self.agent_keys.start()
            stack.push_async_callback(self.agent_keys.stop)
            await self.external_tokens.start()
            stack.push_async_callback(self.external_tokens.stop)
            yield


def given_fields(arguments: Mapping[str, Any], fields: Collection[str]) -> dict[str, Any]:
    """A tool's arguments (its `locals()`) as the body its route takes: those of `fields` that were given
    (not None), so that a tool and a request are read by one validation."""
    return {name: value for name, value in arguments.items() if name in fields and value is not None}


@dataclass(frozen=True)
class Tool:
    """An MCP tool a capability offers.

    `run(actor, **arguments)` calls the capability's service as `actor` (who, from where, through which
    tool), so the service checks rights and writes its audit entry exactly as for an HTTP route. The rest of
    `run`'s signature, with its annotations, is the tool's input schema (the MCP SDK reads it); it returns
    JSON-ready data. A tool that changes nothing is `read_only`; one that any caller may use (not only an
    admin) says so with `needs_admin=False`. A high-risk tool says when a call needs a person's approval
    (`needs_approval`); an agent's call then waits as a change request instead of running.
    """

    name: str
    description: str
    run: Callable[..., Awaitable[Any]]
    read_only: bool = True
    needs_admin: bool = True
    #: Why a call with these arguments needs a person's approval when an agent makes it (None: it does not);
    #: it may be awaitable when the answer depends on stored state (a bucket that still holds objects).
    needs_approval: Callable[[Mapping[str, Any]], str | Awaitable[str | None] | None] | None = None
    #: It runs the project's own code (a function): agent keys reach it with `<group>:invoke`, as they reach
    #: the capability's `invocations` on REST (it still changes what the code changes: not `read_only`).
    invokes: bool = False
    #: Groups whose scopes reach it in place of its own: shown to a key that may read any of them, while its
    #: service checks, per part of the call, the rest (the project config's sections: `auth`, `storage`).
    reached_by: tuple[str, ...] = ()
    #: An exact scope an agent key needs besides its group's (`Principal.has_scope`: never granted by a
    #: wildcard), as `database:owner-sql` for owner-level SQL. Checked where an agent's call is held, so that
    #: a key without it is refused at once, not given a change request that could only fail once approved.
    needs_scope: str | None = None
    #: Offered to MCP clients (listed and callable on `/mcp`). False: only an approval runs it, for a REST
    #: route that the approval gate holds as its call when no tool does that route's work (owner-level
    #: SQL, which stays off the MCP server); its group and scopes apply to the approved call as to any.
    offered: bool = True


class HeldForApproval(Exception):
    """An agent's call that turned out, once it ran, to need a person's approval: what `needs_approval`
    cannot tell from the arguments (SQL whose WHERE names a column, yet changed every row of a table). The
    service has rolled the call back, and raises this instead of answering; the edge that took the call as a
    tool's (the MCP tool runner, the REST approval gate) stores it as a change request of that tool, as if
    `needs_approval` had held it, so an approval runs it for real. Services raise it only for an agent's call
    that no person approved (`Actor.is_unapproved_agent`), and only on paths that are a tool's call; where
    no tool runs the call for an approval to run (an import, a multipart bulk upsert), they refuse it
    instead."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class McpResource:
    """An MCP resource a capability offers: `uri` (a template when it has `{name}` parts, as
    `kilnbase://metadata/{table}`), read by `read(actor, **parts)` as the caller, so the service checks rights
    as for a route. It returns the text; `needs_admin=False` lets any caller list and read it."""

    uri: str
    name: str
    description: str
    read: Callable[..., Awaitable[str]]
    mime_type: str = "text/markdown"
    needs_admin: bool = True


def _no_lifespan() -> AbstractAsyncContextManager[None]:
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Capability:
    name: str
    routes: Sequence[BaseRoute]
    #: Entered when the server or a tool process starts (in the app's order), left when it stops (in reverse).
    lifespan: Callable[[], AbstractAsyncContextManager[None]] = _no_lifespan
    #: Entered only by the server, after every lifespan, and left before them (see the module's docstring).
    background: Callable[[], AbstractAsyncContextManager[None]] = _no_lifespan
    tools: Sequence[Tool] = ()
    #: MCP resources (`resources/list`, `resources/read`) beside the tools.
    resources: Sequence[McpResource] = ()
    #: Path prefixes whose request bodies fall under a limit other than the JSON one.
    body_limits: Mapping[str, BodySurface] = field(default_factory=dict)
    #: Agent keys reach these routes only as their scopes name this capability (False: its service
    #: decides for itself, as the agent keys' own routes do).
    agent_scoped: bool = True
    #: Path prefix of the routes that run the project's own code (functions' `/functions/`): agent keys
    #: reach them with `<name>:invoke` whatever the method, apart from the right to change the capability.
    invocations: str | None = None
    #: Paths that only read whatever their method (a query sent in a POST body: memory's recall): agent keys
    #: reach them with `<name>:read`, in read-only mode too.
    reads: Sequence[str] = ()
    #: Paths whose answer never depends on the caller (the auth config a sign-in page reads, the JWKS):
    #: anyone reaches them, agent keys whatever their scopes, since the same request without the key would.
    public: Sequence[str] = ()
