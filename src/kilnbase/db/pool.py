"""The process's two connection pools to the project database.

Requests run on the request pool, logged in as the authenticator role (`db/roles.py`), which can only become
anon, authenticated or project_admin: a `RESET ROLE` reached by a request's SQL leaves a role with no rights.
Kilnbase's own work (auth, the gateway's bookkeeping, the schema cache, audit) runs on the owner pool,
deliberately and visibly (`Database.as_owner`).
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from kilnbase.config import Settings
from kilnbase.db.session import Database


async def _configure(conn: AsyncConnection[object]) -> None:
    # Connections are handed out outside a transaction; the session helpers open one explicitly.
    await conn.set_autocommit(True)


def create_pool(
    conninfo: str, settings: Settings, *, name: str = "kilnbase", owner: bool = False
) -> AsyncConnectionPool[AsyncConnection[Any]]:
    """A pool, not yet opened (the lifespan opens it); `owner` sizes it for internal work."""
    return AsyncConnectionPool(
        conninfo,
        min_size=settings.db_owner_pool_min if owner else settings.db_pool_min,
        max_size=settings.db_owner_pool_max if owner else settings.db_pool_max,
        kwargs={"prepare_threshold": settings.db_prepare_threshold, "application_name": name},
        configure=_configure,
        open=False,
        name=name,
    )


def create_database(settings: Settings, owner_conninfo: str, request_conninfo: str) -> Database:
    """The two pools (not yet opened: `Database.open` does) and the statement timeout of each request role."""
    return Database(
        create_pool(request_conninfo, settings, name="kilnbase"),
        create_pool(owner_conninfo, settings, name="kilnbase-owner", owner=True),
        statement_timeouts={
            "anon": settings.db_anon_statement_timeout,
            "authenticated": settings.db_authenticated_statement_timeout,
            "project_admin": settings.db_admin_statement_timeout,
        },
    )
