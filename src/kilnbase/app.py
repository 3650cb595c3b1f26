"""Builds the ASGI app from the capabilities. Read it top to bottom: this is all the wiring there is."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware

from kilnbase.ai import routes as ai_routes
from kilnbase.auth import routes as auth_routes
from kilnbase.config import Settings
from kilnbase.dashboard import routes as dashboard_routes
from kilnbase.database import routes as database_routes
from kilnbase.db.pool import create_pool
from kilnbase.db.session import Database
from kilnbase.http.access_tokens import TokenService
from kilnbase.http.errors import EXCEPTION_HANDLERS
from kilnbase.http.principal import CredentialResolver
from kilnbase.http.request_context import RequestContextMiddleware
from kilnbase.http.routing import IndexedRouter
from kilnbase.logs import routes as logs_routes
from kilnbase.records import routes as records_routes
from kilnbase.records.schema_cache import SchemaCache
from kilnbase.secrets import project_key_rotation
from kilnbase.secrets import routes as secrets_routes
from kilnbase.secrets.encryption import SecretBox
from kilnbase.server import routes as server_routes
from kilnbase.server.database_startup import OpenedDatabase, open_database
from kilnbase.server.project_keys import load_project_keys
from kilnbase.server.runtime import Runtime

log = logging.getLogger("kilnbase")


def create_app(
    settings: Settings,
    *,
    progress: Callable[[str], None] | None = None,
    database: OpenedDatabase | None = None,
) -> Starlette:
    """The whole server. Its lifespan opens the database (embedded or `DATABASE_URL`) and migrates it, unless
    the caller did that already (the CLI does, to report startup errors before the HTTP server starts); either
    way the lifespan closes it."""
    report = progress or (lambda message: log.info(message))
    keys = load_project_keys(settings)
    tokens = TokenService(keys)
    runtime = Runtime(settings=settings, keys=keys, tokens=tokens, secret_box=SecretBox(keys.encryption_key))

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        opened: OpenedDatabase = (
            database
            if database is not None
            else await anyio.to_thread.run_sync(open_database, settings, keys, report)
        )
        pool = create_pool(opened.conninfo, settings)
        try:
            await pool.open(wait=True, timeout=30)
            runtime.db = Database(pool)
            runtime.schema_cache = SchemaCache(pool)
            await runtime.schema_cache.start()
            # Rotated API/anon keys live in the database, so every process agrees on them.
            keys.ring.attach(partial(project_key_rotation.load, runtime.db, runtime.secret_box))
            ai_routes.startup(_app, runtime)
            # Everything built so far lives as long as the process: collect once, then keep it out of
            # every later collection, which would otherwise walk it again and again under load.
            gc.collect()
            gc.freeze()
            yield
        finally:
            await ai_routes.shutdown(_app)  # flush queued usage rows while the pool is still open
            keys.ring.attach(None)
            if runtime.schema_cache is not None:
                await runtime.schema_cache.stop()
                runtime.schema_cache = None
            runtime.db = None
            await pool.close()
            if opened.embedded is not None:
                report("Stopping PostgreSQL")
            await anyio.to_thread.run_sync(opened.close)

    app = Starlette(
        routes=[
            *server_routes.routes,
            *auth_routes.routes,
            *logs_routes.routes,
            *secrets_routes.routes,
            *records_routes.routes,
            *database_routes.routes,
            *ai_routes.routes,
            *dashboard_routes.routes,
        ],
        middleware=[
            Middleware(RequestContextMiddleware, resolver=CredentialResolver(keys, tokens)),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    # The same routes and lifespan, matched through an index instead of one regex after another.
    app.router = IndexedRouter(app.router.routes, lifespan=lifespan)
    app.state.runtime = runtime
    return app
