"""Several API processes on one machine: granian's workers in front of one supervisor.

The supervisor (`kilnbase serve --workers N`) starts the embedded Postgres (or checks `DATABASE_URL`) and
applies migrations once; each worker then builds the app with `create_worker_app`, connecting to that
database without migrating it again. Workers are stateless over Postgres, so N of them use N cores.

The supervisor says the server is ready only once every worker's app has started: granian reports a worker
started when its process is, seconds before its app can answer. Each worker leaves a file named by its
process id in a folder the supervisor made (`KILNBASE_SUPERVISED_READY_DIR`) when its app has started, and
the supervisor counts them: a file rather than a pipe, because granian starts (and restarts) the workers
and hands them nothing but the environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from granian import Granian
from granian.constants import Interfaces
from starlette.applications import Starlette

from kilnbase.config import Settings
from kilnbase.server.database_startup import OpenedDatabase

_CONNINFO_ENV = "KILNBASE_SUPERVISED_CONNINFO"
_READY_DIR_ENV = "KILNBASE_SUPERVISED_READY_DIR"
#: How often the supervisor counts the workers that have started, until all have.
_READY_POLL_SECONDS = 0.1

log = logging.getLogger("kilnbase.workers")


def create_worker_app() -> Starlette:
    """granian's factory in each worker: settings from the environment the supervisor prepared."""
    from kilnbase.app import create_app
    from kilnbase.structured_log import configure_logging

    settings = Settings()
    configure_logging(settings.log_level)
    conninfo = os.environ.get(_CONNINFO_ENV) or settings.database_url
    if not conninfo:
        raise RuntimeError(f"{_CONNINFO_ENV} is not set: start workers with `kilnbase serve --workers N`")
    return create_app(settings, database=OpenedDatabase(conninfo, embedded=None), on_ready=_worker_ready)


def _worker_ready() -> None:
    log.info("API worker %d has started", os.getpid())
    ready_dir = os.environ.get(_READY_DIR_ENV)
    if ready_dir:
        # (Only the banner waits for it: a folder gone, with its supervisor, never stops a worker.)
        with contextlib.suppress(OSError):
            (Path(ready_dir) / str(os.getpid())).touch()


def _announce_when_ready(ready_dir: Path, workers: int, announce: Callable[[], None]) -> threading.Event:
    """Calls `announce` (in a thread of its own) once `workers` workers have started; set the event returned
    to stop waiting."""
    stop = threading.Event()

    def wait() -> None:
        while not stop.wait(_READY_POLL_SECONDS):
            if sum(1 for _ in ready_dir.iterdir()) >= workers:
                announce()
                return

    threading.Thread(target=wait, name="kilnbase-workers-ready", daemon=True).start()
    return stop


def serve_with_workers(
    settings: Settings, opened: OpenedDatabase, workers: int, announce: Callable[[], None]
) -> None:
    """Run granian with `workers` processes until SIGINT/SIGTERM, calling `announce` once all have started;
    the caller stops the database after."""
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
    ready_dir = Path(tempfile.mkdtemp(prefix="kilnbase-workers-"))
    os.environ[_READY_DIR_ENV] = str(ready_dir)
    stop = _announce_when_ready(ready_dir, workers, announce)
    try:
        server.serve()
    finally:
        stop.set()
        shutil.rmtree(ready_dir, ignore_errors=True)
