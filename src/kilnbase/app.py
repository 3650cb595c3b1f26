"""Builds the ASGI app from the capabilities. Read it top to bottom: this is all the wiring there is.

A capability is a folder with a `capability(service)` function (its routes, lifespan and MCP tools); adding
one is its folder, its service in `services.py`, and one line in `capabilities` below. Lifespans are entered
in that order, after the core (pools, schema cache), and left in reverse through one exit stack.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence

import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from kilnbase.advisor import routes as advisor_routes
from kilnbase.agent_docs import routes as agent_docs_routes
from kilnbase.agents import routes as agents_routes
from kilnbase.ai import routes as ai_routes
from kilnbase.auth import routes as auth_routes
from kilnbase.capability import BodySurface, Capability
from kilnbase.config import Settings
from kilnbase.dashboard import routes as dashboard_routes
from kilnbase.database import routes as database_routes
from kilnbase.database_backups import routes as database_backups_routes
from kilnbase.database_encryption import routes as database_encryption_routes
from kilnbase.database_webhooks import routes as database_webhooks_routes
from kilnbase.db.idempotency import IdempotencyKeys
from kilnbase.functions import routes as functions_routes
from kilnbase.health import routes as health_routes
from kilnbase.http.agent_scopes import guard_routes
from kilnbase.http.errors import EXCEPTION_HANDLERS
from kilnbase.http.idempotency import IdempotencyMiddleware
from kilnbase.http.request_context import BodyLimit, RequestContextMiddleware
from kilnbase.http.routing import IndexedRouter
from kilnbase.identity.principal import API_KEY_HOLDER, CredentialResolver, Principal
from kilnbase.keys.project_keys import ProjectKeys, load_project_keys
from kilnbase.kv import routes as kv_routes
from kilnbase.logs import routes as logs_routes
from kilnbase.mcp_server.access import EVERYTHING, Listed, Narrowing
from kilnbase.mcp_server.approvals import Approvals
from kilnbase.mcp_server.endpoint import mcp_capability
from kilnbase.mcp_server.rest_gate import RestApprovalGate
from kilnbase.memory import routes as memory_routes
from kilnbase.messaging import routes as messaging_routes
from kilnbase.metadata import routes as metadata_routes
from kilnbase.payments import routes as payments_routes
from kilnbase.project_config import routes as project_config_routes
from kilnbase.realtime import routes as realtime_routes
from kilnbase.records import routes as records_routes
from kilnbase.schedules import routes as schedules_routes
from kilnbase.secrets import routes as secrets_routes
from kilnbase.server.database_startup import OpenedDatabase, prepare
from kilnbase.services import Services, build_core, build_services
from kilnbase.storage import routes as storage_routes
from kilnbase.structured_log import write_waiting_lines

log = logging.getLogger("kilnbase")


def capabilities(services: Services) -> list[Capability]:
    """Every capability, in the order its routes are matched and its lifespan is entered."""
    return [
        health_routes.capability(services.core),
        auth_routes.capability(services.auth),
        logs_routes.capability(services.logs),
        secrets_routes.capability(services.key_rotation, services.secrets),
        records_routes.capability(services.records),
        database_routes.capability(services.database),
        database_backups_routes.capability(services.database_backups, services.backup_scheduler),
        database_encryption_routes.capability(services.database_encryption),
        database_webhooks_routes.capability(services.database_webhooks, services.webhook_runner),
        messaging_routes.capability(services.messaging, services.message_runner),
        agents_routes.capability(services.agents),
        ai_routes.capability(services.ai),
        storage_routes.capability(services.storage, services.core.agent_keys),
        metadata_routes.capability(services.metadata),
        agent_docs_routes.capability(services.docs),
        functions_routes.capability(services.functions),
        schedules_routes.capability(services.schedules, services.schedule_runner),
        advisor_routes.capability(services.advisor),
        memory_routes.capability(services.memory),
        kv_routes.capability(services.kv),
        project_config_routes.capability(services.project_config),
        payments_routes.capability(services.payments),
        realtime_routes.capability(services.realtime),
        dashboard_routes.capability(services.core),
    ]


class KilnbaseApp(Starlette):
    """Starlette, matching routes through an index (`http/routing.py`), holding the services it was built
    from (for the CLI, tests and tools; routes are given theirs explicitly)."""

    def __init__(
        self,
        services: Services,
        routes: Sequence[BaseRoute],
        middleware: Sequence[Middleware],
        lifespan: Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]],
    ) -> None:
        super().__init__(middleware=middleware, lifespan=lifespan)
        self.router = IndexedRouter(routes, lifespan=lifespan)
        self.services = services

    def build_middleware_stack(self) -> ASGIApp:
        """The middleware around the router, without the two error layers Starlette adds around every
        request: the first middleware, `RequestContextMiddleware`, is the one error boundary
        (`http.errors.ErrorBoundary`)."""
        app: ASGIApp = self.router
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app


#: Allocations (less deallocations) of tracked objects between collections of the youngest generation.
YOUNG_GENERATION_OBJECTS = 20_000


def body_limits(settings: Settings, offered: Sequence[Capability]) -> Callable[[str], BodyLimit]:
    """The body limit for a request path: the longest prefix a capability declared, else the JSON limit."""
    by_surface: dict[BodySurface, BodyLimit] = {
        "json": BodyLimit(settings.max_json_body_bytes, "KILNBASE_MAX_JSON_BODY_BYTES"),
        "gateway": BodyLimit(settings.max_gateway_body_bytes, "KILNBASE_MAX_GATEWAY_BODY_BYTES"),
        "upload": BodyLimit(settings.max_upload_body_bytes, "KILNBASE_MAX_UPLOAD_BODY_BYTES"),
    }
    prefixes = sorted(
        ((prefix, surface) for capability in offered for prefix, surface in capability.body_limits.items()),
        key=lambda item: len(item[0]),
        reverse=True,
    )
    declared = tuple(prefix for prefix, _surface in prefixes)
    default = by_surface["json"]

    def limit_for(path: str) -> BodyLimit:
        if not path.startswith(declared):  # most paths: one test, in C
            return default
        for prefix, surface in prefixes:
            if path.startswith(prefix):
                return by_surface[surface]
        return default

    return limit_for


def create_app(
    settings: Settings,
    *,
    progress: Callable[[str], None] | None = None,
    database: OpenedDatabase | None = None,
    background: bool = True,
    on_ready: Callable[[], None] | None = None,
) -> KilnbaseApp:
    """The whole server, over a database the caller opened (the CLI does, to report startup errors before
    the HTTP server starts), or over `DATABASE_URL`, which the lifespan migrates. Either way the lifespan
    closes it. Without `background`, the capabilities' background work (claim loops, sweeps, listeners) does
    not run: `bench.instructions` counts a request's own work, and that work would be counted with it.
    `on_ready` is called once every capability has started (a worker tells its supervisor so)."""
    report = progress or (lambda message: log.info(message))
    keys = load_project_keys(settings)
    prepared = database is not None
    if database is None:
        if not settings.database_url:
            raise ValueError("create_app needs an opened database or DATABASE_URL (the CLI opens one)")
        database = OpenedDatabase(settings.database_url, embedded=None)
    opened = database
    services = build_services(build_core(settings, keys, opened.conninfo))
    offered = capabilities(services)
    for capability in offered:  # agent keys reach only the feature groups their scopes name
        if capability.agent_scoped:
            guard_routes(
                capability.routes,
                capability.name,
                services.core.agent_keys,
                capability.invocations,
                capability.reads,
                capability.public,
            )
    # The MCP server over every other capability's tools; mutating calls can check the schema's version.
    approvals = Approvals(services.core.database, services.core.agent_keys)
    offered.append(mcp_capability(offered, services.core, services.metadata.schema_fingerprint, approvals))
    tools = {tool.name: Listed(capability.name, tool) for capability in offered for tool in capability.tools}

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(write_waiting_lines)  # (last: the request lines of the whole run are written)
            stack.push_async_callback(_close_database, opened, report)
            if not prepared:
                await anyio.to_thread.run_sync(prepare, settings, keys, opened.conninfo, report)
            await stack.enter_async_context(running(services, offered, background=background))
            # Everything built so far lives as long as the process: keep it out of every later collection,
            # which would otherwise walk it again and again under load. The young generations are collected
            # first (1 ms); a full collection would find a few dozen more unreachable objects among some
            # 136,000, and took 60 to 140 ms of every start.
            gc.collect(1)
            gc.freeze()
            # A young generation of 20,000 objects rather than 700: at 700, objects that live only as long
            # as a request or a broadcast (futures, timers, queued packets) were collected while still alive
            # and promoted, until the old generation's quota ran out and a full collection walked every open
            # connection's objects: 80-110 ms pauses, several a minute, with 1,000 realtime subscribers. Now
            # they mostly die young; a young collection takes about 4 ms.
            _young, middle, old = gc.get_threshold()
            gc.set_threshold(YOUNG_GENERATION_OBJECTS, middle, old)
            if on_ready is not None:
                on_ready()
            yield

    core = services.core
    middleware = [
        Middleware(
            RequestContextMiddleware,
            resolver=resolver_of(keys, services),
            body_limit_for=body_limits(settings, offered),
            max_header_bytes=settings.max_header_bytes,
            trusted_proxies=settings.trusted_proxies,
            on_request=services.logs.request_log.append,
            exception_handlers=EXCEPTION_HANDLERS,
        ),
        Middleware(IdempotencyMiddleware, keys=IdempotencyKeys(core.database, core.secret_box)),
        # An agent key's high-risk REST request is held for approval, as its tool call would be.
        Middleware(RestApprovalGate, approvals=approvals, tools=tools, agent_keys=services.core.agent_keys),
    ]
    routes = [route for capability in offered for route in capability.routes]
    return KilnbaseApp(services, routes, middleware, lifespan)


def resolver_of(keys: ProjectKeys, services: Services) -> CredentialResolver:
    core = services.core
    return CredentialResolver(keys, core.tokens, core.ended_sessions, core.agent_keys, core.external_tokens)


@contextlib.asynccontextmanager
async def running(
    services: Services, offered: Sequence[Capability], *, background: bool
) -> AsyncIterator[None]:
    """The core, then each capability's lifespan in order, then (in the server: `background`) each one's
    background work; left in reverse."""
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(services.core.running())
        for capability in offered:
            await stack.enter_async_context(capability.lifespan())
        if background:
            for capability in offered:
                await stack.enter_async_context(capability.background())
        yield


async def serve_mcp_stdio(
    settings: Settings, conninfo: str, credential: str | None, narrowing: Narrowing = EVERYTHING
) -> None:
    """The MCP tools over standard input and output, for one local agent acting as `credential` (an API
    key, an anon key or an access token; None: the project's API key), on a database already prepared."""
    from kilnbase.mcp_server.server import build_server  # (the MCP SDK: see `mcp_server.endpoint`)

    keys = load_project_keys(settings)
    services = build_services(build_core(settings, keys, conninfo))
    offered = capabilities(services)
    resolver = resolver_of(keys, services)

    def principal() -> Principal:
        return API_KEY_HOLDER if credential is None else resolver.resolve(f"Bearer {credential}", None)

    # A tool process: the capabilities' background work (scheduled calls, sweeps) is the server's.
    async with running(services, offered, background=False):
        # A credential that is wrong from the start stops the command here (an external provider's token
        # has its keys fetched first).
        if credential is not None:
            await resolver.resolve_fetching(f"Bearer {credential}", None)
        approvals = Approvals(services.core.database, services.core.agent_keys)
        fingerprint = services.metadata.schema_fingerprint
        server = build_server(
            offered,
            services.core,
            approvals,
            fingerprint,
            stdio_principal=principal,
            stdio_narrowing=narrowing,
        )
        try:
            await server.run_stdio_async()
        except* BrokenPipeError:
            # The agent closed its end of standard output: the session is over, as when it closes standard
            # input. (The SDK's writer task raises it, inside its task group.) Nothing more can be written
            # there, so the interpreter's own flush at exit must not try.
            _discard_standard_output()


def _discard_standard_output() -> None:
    """Point standard output at /dev/null: what Python's documentation advises after EPIPE on it."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


async def _close_database(opened: OpenedDatabase, report: Callable[[str], None]) -> None:
    if opened.embedded is not None:
        report("Stopping PostgreSQL")
    await anyio.to_thread.run_sync(opened.close)
