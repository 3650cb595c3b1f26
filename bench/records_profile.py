"""In-process CPU cost of one records request, without an HTTP server: where the microseconds go.

Both apps of `bench/records.py` ((b) the bare Starlette handler and (c) Kilnbase) are driven directly through
ASGI by concurrent tasks in this process, so the figure is this process's CPU time per request: the HTTP
server's share is left out. CPU time still drifts with the host (seen here: 0.76 to 1.02 for the same code
over rounds of 6,000 requests), so b/c is taken over rounds that alternate the two apps. `--profile`
prints cProfile's view of the Kilnbase runs. `--bytecodes` counts, instead of timing, the bytecodes each
request executes, by function (`bench/bytecodes.py`), for one client: a measure no other load on the machine
changes.

    python -m bench.records_profile [--requests 4000] [--rounds 3] [--concurrency 16] [--cases get_one,patch]
                                    [--profile]
    python -m bench.records_profile --rounds 80 --requests 200   (a noisy host: short rounds, alternating)
    python -m bench.records_profile --bytecodes [--requests 300] [--top 25] [--cases get_one,patch]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import psutil
import psycopg
from tests.support.postgres import TestCluster

from bench.bytecodes import count_bytecodes, report
from bench.records import (
    CASES,
    SEED,
    Case,
    postgres_cpu_seconds,
    postgres_process,
    render_statements,
)

Asgi = Callable[
    [dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[Any], Awaitable[None]]], Any
]


class Lifespan:
    """Runs an ASGI app's lifespan in a task: `start()` after startup completed, `stop()` after shutdown."""

    def __init__(self, app: Asgi) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(
            self.app({"type": "lifespan", "asgi": {"version": "3.0"}}, self.inbox.get, self.outbox.put)
        )
        await self.inbox.put({"type": "lifespan.startup"})
        message = await self.outbox.get()
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"startup failed: {message}")

    async def stop(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.outbox.get()
        if self.task is not None:
            await self.task


def scope_for(case: Case, path: str, token: str | None) -> dict[str, Any]:
    raw_path, _, query = path.partition("?")
    body = case.body_bytes
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    headers.append((b"content-length", str(len(body)).encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": case.method,
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def drive(
    app: Asgi, scope: dict[str, Any], body: bytes, expected: int, requests: int, concurrency: int
) -> float:
    """CPU seconds of this process per request, over `requests` requests from `concurrency` tasks."""
    return (await drive_both(app, scope, body, expected, requests, concurrency, None))[0]


async def drive_both(
    app: Asgi,
    scope: dict[str, Any],
    body: bytes,
    expected: int,
    requests: int,
    concurrency: int,
    postgres: psutil.Process | None,
) -> tuple[float, float]:
    """`drive`, and Postgres's CPU seconds per request (0 without `postgres`)."""
    remaining = requests

    async def one() -> None:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        status = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(dict(scope, state={}), receive, send)
        if status != expected:
            raise RuntimeError(f"status {status}, expected {expected}")

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()

    pg_started = postgres_cpu_seconds(postgres) if postgres is not None else 0.0
    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu = time.process_time() - started
    pg_cpu = postgres_cpu_seconds(postgres) - pg_started if postgres is not None else 0.0
    return cpu / requests, pg_cpu / requests


async def run(args: argparse.Namespace, conninfo: str, workdir: Path, postgres: psutil.Process) -> None:
    from bench.records_servers import bare_app, kilnbase_app

    # The request log is written as in production, to /dev/null (the handler keeps the stream it is given).
    devnull = open(os.devnull, "w")  # noqa: SIM115 (open for the whole run)
    with contextlib.redirect_stdout(devnull):
        kb = kilnbase_app()
        kb_life = Lifespan(kb)
        await kb_life.start()
    bare = bare_app()
    bare_life = Lifespan(bare)
    await bare_life.start()
    api_key = json.loads((workdir / "data" / "keys.json").read_text())["api_key"]
    profiler = cProfile.Profile() if args.profile else None
    try:
        if args.bytecodes:
            print(f"{'case':<10} {'bare':>8} {'kb':>8} {'b/c':>6}   (bytecodes per request, one client)")
        else:
            print(
                f"{'case':<10} {'bare us':>8} {'kb us':>8} {'b/c':>6} {'pg b':>6} {'pg c':>6}"
                "   (CPU per request: this process; Postgres)"
            )
        for case in CASES:
            if case.name not in args.cases.split(","):
                continue
            bare_scope = scope_for(case, f"/case/{case.name}", None)
            kb_scope = scope_for(case, f"/api/database{case.path}", api_key)
            body = case.body_bytes
            count = max(args.requests // (20 if case.name.startswith("post_1000") else 1), 50)
            await drive(bare, bare_scope, body, case.status, count // 4, args.concurrency)
            await drive(kb, kb_scope, body, case.status, count // 4, args.concurrency)
            if args.bytecodes:
                bare_counts = await count_bytecodes(drive(bare, bare_scope, body, case.status, count, 1))
                kb_counts = await count_bytecodes(drive(kb, kb_scope, body, case.status, count, 1))
                print(report(case.name, bare_counts, kb_counts, count, args.top), flush=True)
                continue
            bare_runs, kb_runs = [], []
            for _ in range(args.rounds):
                bare_runs.append(
                    await drive_both(bare, bare_scope, body, case.status, count, args.concurrency, postgres)
                )
                if profiler is not None:
                    profiler.enable()
                kb_runs.append(
                    await drive_both(kb, kb_scope, body, case.status, count, args.concurrency, postgres)
                )
                if profiler is not None:
                    profiler.disable()
            b, c = (statistics.median(cpu for cpu, _ in runs) * 1e6 for runs in (bare_runs, kb_runs))
            pg_b, pg_c = (statistics.median(pg for _, pg in runs) * 1e6 for runs in (bare_runs, kb_runs))
            # The ratio of the sums over all rounds: with many short rounds (`--rounds 80 --requests 200`)
            # the two apps alternate often enough that a host's drift falls on both alike.
            ratio = sum(cpu for cpu, _ in bare_runs) / sum(cpu for cpu, _ in kb_runs)
            print(f"{case.name:<10} {b:8.0f} {c:8.0f} {ratio:6.2f} {pg_b:6.0f} {pg_c:6.0f}", flush=True)
    finally:
        await kb_life.stop()
        await bare_life.stop()
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats(args.sort).print_stats(args.top)
        print(out.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", default=",".join(c.name for c in CASES))
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--bytecodes", action="store_true", help="count bytecodes instead of timing")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=45)
    args = parser.parse_args()
    cluster = TestCluster()
    workdir = Path(tempfile.mkdtemp(prefix="kb-prof-"))
    try:
        conninfo = cluster.create_database("bench")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(SEED)
        statements = asyncio.run(render_statements(conninfo))
        (workdir / "cases.json").write_bytes(orjson.dumps(statements))
        os.environ.update(
            {
                "DATABASE_URL": conninfo,
                "KB_BENCH_DATA": str(workdir / "data"),
                "KB_BENCH_CASES": str(workdir / "cases.json"),
                "KILNBASE_DB_POOL_MIN": "8",
            }
        )
        asyncio.run(run(args, conninfo, workdir, postgres_process(cluster.root)))
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
