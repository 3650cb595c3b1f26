"""The process's connection pool to the project database."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from kilnbase.config import Settings


async def _configure(conn: AsyncConnection[object]) -> None:
    # Connections are handed out outside a transaction; the session helpers open one explicitly.
    await conn.set_autocommit(True)


def create_pool(conninfo: str, settings: Settings) -> AsyncConnectionPool[AsyncConnection[object]]:
    return AsyncConnectionPool(
        conninfo,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        kwargs={"prepare_threshold": settings.db_prepare_threshold, "application_name": "kilnbase"},
        configure=_configure,
        open=False,
        name="kilnbase",
    )
