"""Several API processes on one machine: granian's workers in front of one supervisor.

The supervisor (`kilnbase serve --workers N`) starts the embedded Postgres (or checks `DATABASE_URL`) and
applies migrations once; each worker then builds the app with `create_worker_app`, connecting to that
database without migrating it again. Workers are stateless over Postgres, so N of them use N cores.
"""

from __future__ import annotations

import os

from granian import Granian
from granian.constants import Interfaces
from starlette.applications import Starlette

from kilnbase.config import Settings
from kilnbase.server.database_startup import OpenedDatabase

_CONNINFO_ENV = "KILNBASE_SUPERVISED_CONNINFO"


def create_worker_app() -> Starlette:
    """granian's factory in each worker: settings from the environment the supervisor prepared."""
    from kilnbase.app import create_app
    from kilnbase.structured_log import configure_logging

    settings = Settings()
    configure_logging(settings.log_level)
    conninfo = os.environ.get(_CONNINFO_ENV) or settings.database_url
    if not conninfo:
        raise RuntimeError(f"{_CONNINFO_ENV} is not set: start workers with `kilnbase serve --workers N`")
    return create_app(settings, database=OpenedDatabase(conninfo, embedded=None))


def serve_with_workers(settings: Settings, opened: OpenedDatabase, workers: int) -> None:
    """Run granian with `workers` processes until SIGINT/SIGTERM; the caller stops the database after."""
    os.environ[_CONNINFO_ENV] = opened.conninfo
    os.environ["KILNBASE_DATA_DIR"] = str(settings.data_dir.resolve())
    os.environ["KILNBASE_HOST"] = settings.host
    os.environ["KILNBASE_PORT"] = str(settings.port)
    os.environ.pop("PORT", None)  # KILNBASE_PORT above carries the port the supervisor settled on
    server = Granian(
        "kilnbase.workers:create_worker_app",
        factory=True,
        interface=Interfaces.ASGI,
        address=settings.host,
        port=settings.port,
        workers=workers,
        log_access=False,
        workers_kill_timeout=15,
        # A worker that dies (out of memory, a crash in a native library) is replaced, so the server never
        # goes on at part of its capacity, or none.
        respawn_failed_workers=True,
    )
    server.serve()
