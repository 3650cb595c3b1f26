"""The process's two connection pools to the project database.

Requests run on the request pool, logged in as the authenticator role (`db/roles.py`), which can only become
anon, authenticated or project_admin: a `RESET ROLE` reached by a request's SQL leaves a role with no rights.
Kilnbase's own work (auth, the gateway's bookkeeping, the schema cache, audit) runs on the owner pool,
deliberately and visibly (`Database.as_owner`).
"""

from __future__ import annotations

from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from kilnbase.config import Settings
from kilnbase.db.availability import DatabaseAvailability
from kilnbase.db.session import Database

#: How long the pool keeps trying to replace a lost connection before it waits to be asked again (psycopg's
#: default, 5 minutes, let its backoff grow to two minutes between attempts: long after the database was back,
#: no connection came).
RECONNECT_SECONDS = 5.0


def catalog_only(conninfo: str) -> str:
    """`conninfo` with its sessions' search_path set to `pg_catalog` alone: for every connection the owner
    makes at run time (its pool, its listeners).

    The app's admins, and agent keys that may write the schema, create objects in `public` as project_admin.
    A function there whose argument types match a call exactly wins over a built-in one that needs a cast or
    takes a polymorphic argument (`public.make_interval(secs integer)` over `pg_catalog.make_interval`,
    `public.unnest(name[])` over `pg_catalog.unnest(anyarray)`). With `public` in the owner's search path,
    Kilnbase's own statements would call such a function with the owner's rights (a superuser's, in the
    embedded cluster). Kilnbase names its own objects with their schema; built-ins resolve in `pg_catalog`,
    which no app can write; an extension's objects are named with the extension's schema where used."""
    options = conninfo_to_dict(conninfo).get("options") or ""
    return make_conninfo(conninfo, options=f"{options} -c search_path=pg_catalog".strip())


async def _configure(conn: AsyncConnection[object]) -> None:
    # Connections are handed out outside a transaction; the session helpers open one explicitly.
    await conn.set_autocommit(True)
    # JSON from the database is read as request bodies are, with orjson: a number past 64 bits, which jsonb
    # keeps exactly (1e30 arrives as 1000...0), becomes a float, as InsForge's JSON.parse reads it. Python's
    # json made it an int that orjson cannot write, and every answer holding it was a 500.
    set_json_loads(orjson.loads, conn)


class WatchedPool(AsyncConnectionPool[AsyncConnection[Any]]):
    """psycopg's pool, telling `availability` what it sees, and refusing at once while the database is
    down (`db/availability.py`)."""

    def __init__(self, conninfo: str, availability: DatabaseAvailability, **kwargs: Any) -> None:
        super().__init__(conninfo, **kwargs)
        self.availability = availability
        availability.on_recovery(self.check)

    async def getconn(self, timeout: float | None = None) -> AsyncConnection[Any]:  # noqa: ASYNC109 (psycopg's)
        self.availability.raise_if_down()
        try:
            return await super().getconn(timeout)
        except PoolTimeout:
            self.availability.suspect()
            raise

    async def putconn(self, conn: AsyncConnection[Any]) -> None:
        if conn.broken:
            self.availability.suspect()
        await super().putconn(conn)


def create_pool(
    conninfo: str,
    settings: Settings,
    *,
    name: str = "kilnbase",
    owner: bool = False,
    availability: DatabaseAvailability | None = None,
) -> WatchedPool:
    """A pool, not yet opened (the lifespan opens it); `owner` sizes it for internal work. Pools of one
    database share one `availability` (a pool alone gets its own)."""
    return WatchedPool(
        conninfo,
        availability or DatabaseAvailability(conninfo),
        min_size=settings.db_owner_pool_min if owner else settings.db_pool_min,
        max_size=settings.db_owner_pool_max if owner else settings.db_pool_max,
        kwargs={"prepare_threshold": settings.db_prepare_threshold, "application_name": name},
        configure=_configure,
        open=False,
        name=name,
        reconnect_timeout=RECONNECT_SECONDS,
    )


def create_database(settings: Settings, owner_conninfo: str, request_conninfo: str) -> Database:
    """The two pools (not yet opened: `Database.open` does) and the statement timeout of each request role."""
    availability = DatabaseAvailability(owner_conninfo)
    return Database(
        create_pool(request_conninfo, settings, name="kilnbase", availability=availability),
        create_pool(owner_conninfo, settings, name="kilnbase-owner", owner=True, availability=availability),
        availability,
        statement_timeouts={
            "anon": settings.db_anon_statement_timeout,
            "authenticated": settings.db_authenticated_statement_timeout,
            "project_admin": settings.db_admin_statement_timeout,
        },
    )
