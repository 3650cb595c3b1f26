"""Records API benchmark: each case against its floor, in the same run.

For single-row GET, 100-row filtered+ordered GET, an embed, single POST, 1,000-row bulk POST, PATCH and RPC,
at a fixed concurrency, it measures requests/s and p50/p99 of
  (a) the same SQL sent straight to Postgres (psycopg pool, same role+claims transaction, one pipeline),
  (b) a bare Starlette handler running that same SQL on the same server stack (the floor for Python HTTP),
  (c) Kilnbase's records API,
and prints c/b (target: 0.8 or more) and c/a. The statement for (a) and (b) is the one the records engine
renders for the request, so all three do the same database work.

    python -m bench.records [--seconds 3] [--concurrency 16] [--server uvicorn|granian] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool
from tests.support.postgres import TestCluster
from tests.support.servers import free_port

from bench.records_servers import ADMIN
from kilnbase.db.session import Database
from kilnbase.records.query_grammar import parse_query
from kilnbase.records.read_plan import build_read_plan
from kilnbase.records.schema_cache import load_snapshot
from kilnbase.records.sql_builder import (
    Source,
    Sql,
    call_source,
    ident,
    insert_statement,
    read_statement,
    table_source,
    update_statement,
)

ROOT = Path(__file__).resolve().parents[1]
#: Load before each measurement: pools fill, statements get prepared, the first request's imports are done.
WARMUP_SECONDS = 1.0

SEED = """
CREATE TABLE bench_owners (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE bench_items (
    id serial PRIMARY KEY, owner_id int NOT NULL REFERENCES bench_owners (id), name text NOT NULL,
    score int NOT NULL, created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON bench_items (score);
CREATE INDEX ON bench_items (owner_id);
CREATE TABLE bench_events (id bigserial PRIMARY KEY, name text NOT NULL, score int);
INSERT INTO bench_owners (name) SELECT 'owner ' || g FROM generate_series(1, 100) g;
INSERT INTO bench_items (owner_id, name, score)
    SELECT 1 + g % 100, 'item ' || g, (g * 7919) % 1000 FROM generate_series(1, 10000) g;
CREATE FUNCTION bench_top(n int) RETURNS SETOF bench_items LANGUAGE sql STABLE
    AS 'SELECT * FROM bench_items ORDER BY score DESC, id LIMIT n';
ANALYZE;
"""


@dataclass
class Case:
    name: str
    method: str
    path: str  # under /api/database
    body: Any = None
    status: int = 200

    @property
    def body_bytes(self) -> bytes:
        return b"" if self.body is None else orjson.dumps(self.body)


CASES = [
    Case("get_one", "GET", "/records/bench_items?id=eq.500&select=id,name,score"),
    Case(
        "get_100",
        "GET",
        "/records/bench_items?select=id,name,score&score=gte.100&order=score.desc,id&limit=100",
    ),
    Case("embed", "GET", "/records/bench_items?select=id,name,owner:bench_owners(name)&id=lte.20&order=id"),
    Case("post_one", "POST", "/records/bench_events", {"name": "one", "score": 1}, 201),
    Case(
        "post_1000",
        "POST",
        "/records/bench_events",
        [{"name": f"n{i}", "score": i} for i in range(1000)],
        201,
    ),
    Case("patch", "PATCH", "/records/bench_items?id=eq.42", {"score": 7}, 204),
    Case("rpc", "POST", "/rpc/bench_top", {"n": 10}),
]


async def render_statements(conninfo: str) -> dict[str, dict[str, Any]]:
    """The statement the records engine sends for each case (rendered by its own stages)."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        snapshot = await load_snapshot(conn)
    items = snapshot.tables[("public", "bench_items")]
    events = snapshot.tables[("public", "bench_events")]
    out: dict[str, dict[str, Any]] = {}
    for case in CASES:
        query_string = case.path.partition("?")[2]
        pairs = [tuple(p.split("=", 1)) for p in query_string.split("&")] if query_string else []
        query = parse_query(pairs)  # type: ignore[arg-type]
        body_param: int | None = None
        wrap = False
        read_only = case.method == "GET"
        if case.name in ("get_one", "get_100", "embed"):
            node = build_read_plan(snapshot, items, query)
            statement = read_statement(
                node, table_source(items, node.alias), count_exact=False, limit=node.limit, offset=node.offset
            )
        elif case.name.startswith("post"):
            columns = ["name", "score"]
            statement = insert_statement(
                events,
                columns,
                "[]",
                conflict_columns=None,
                resolution=None,
                missing_default=False,
                returning=False,
            )
            body_param, wrap = 0, True
        elif case.name == "patch":
            conditions = build_read_plan(snapshot, items, query).conditions
            statement = update_statement(items, items.name, ["score"], "{}", conditions, returning=False)
            body_param = 0
        else:
            routine = snapshot.routines[("public", "bench_top")][0]
            from_args, call = call_source(routine, "{}", ["n"], "bench_top")
            node = build_read_plan(snapshot, items, query, alias="bench_top")
            source = (
                Sql()
                .extend(from_args)
                .add(" CROSS JOIN LATERAL ")
                .extend(call)
                .add(f" AS {ident(node.alias)}")
            )
            statement = read_statement(node, Source(source), count_exact=False, limit=None, offset=0)
            body_param = 0
            read_only = True
        out[case.name] = {
            "sql": statement.text,
            "params": statement.params,
            "body_param": body_param,
            "wrap_body": wrap,
            "read_only": read_only,
            "status": case.status,
        }
    return out


# ---------------------------------------------------------------------------------------------------------
# load


@dataclass
class Result:
    requests: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def http_load(port: int, request: bytes, expected: int, concurrency: int, seconds: float) -> Result:
    latencies: list[float] = []
    failures: list[int] = []

    async def worker(deadline: float, record: bool) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(request)
                status = await _read_response(reader)
                if status != expected:
                    failures.append(status)
                if record:
                    latencies.append(time.perf_counter() - started)
        finally:
            writer.close()

    await asyncio.gather(*(worker(time.perf_counter() + WARMUP_SECONDS, False) for _ in range(concurrency)))
    started = time.perf_counter()
    await asyncio.gather(*(worker(started + seconds, True) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"unexpected statuses {sorted(set(failures))} (expected {expected})")
    return Result(len(latencies), elapsed, latencies)


async def direct_load(
    conninfo: str, case: dict[str, Any], body: bytes, concurrency: int, seconds: float
) -> Result:
    params = list(case["params"])
    if case["body_param"] is not None:
        text = body.decode()
        params[case["body_param"]] = f"[{text}]" if case["wrap_body"] and text.startswith("{") else text
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo, min_size=concurrency, max_size=concurrency, open=False, kwargs={"prepare_threshold": 5}
    )
    await pool.open(wait=True)
    database = Database(pool)
    latencies: list[float] = []

    async def worker(deadline: float, record: bool) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            async with database.as_caller(ADMIN, read_only=case["read_only"]) as cur:
                await cur.execute(case["sql"], params)
                if cur.description:
                    await cur.fetchone()
            if record:
                latencies.append(time.perf_counter() - started)

    try:
        await asyncio.gather(
            *(worker(time.perf_counter() + WARMUP_SECONDS, False) for _ in range(concurrency))
        )
        started = time.perf_counter()
        await asyncio.gather(*(worker(started + seconds, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        await pool.close()
    return Result(len(latencies), elapsed, latencies)


def http_request(method: str, path: str, body: bytes, token: str | None) -> bytes:
    headers = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if token:
        headers.append(f"Authorization: Bearer {token}")
    headers.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


# ---------------------------------------------------------------------------------------------------------
# servers


def start_server(
    factory: str, port: int, env: dict[str, str], server: str, workers: int
) -> subprocess.Popen[bytes]:
    if server == "granian":
        command = [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            factory,
        ]
    else:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            factory,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
            "--lifespan",
            "on",
        ]
    return subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, start_new_session=True)


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cases", default=",".join(c.name for c in CASES))
    args = parser.parse_args()
    if args.server == "granian":
        try:
            import granian  # noqa: F401
        except ImportError:
            parser.error("granian is not installed (pip install granian==2.8.7)")
    wanted = set(args.cases.split(","))

    cluster = TestCluster()
    processes: list[subprocess.Popen[bytes]] = []
    workdir = Path(tempfile.mkdtemp(prefix="kb-bench-"))
    try:
        conninfo = cluster.create_database("bench")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(SEED)
        statements = asyncio.run(render_statements(conninfo))
        cases_file = workdir / "cases.json"
        cases_file.write_bytes(orjson.dumps(statements))
        env = {
            "DATABASE_URL": conninfo,
            "KB_BENCH_DATA": str(workdir / "data"),
            "KB_BENCH_CASES": str(cases_file),
            "LOG_LEVEL": "warning",
            "KILNBASE_DB_POOL_MIN": "8",  # the bare app's pool starts with 8 too
        }
        kb_port, bare_port = free_port(), free_port()
        processes.append(
            start_server("bench.records_servers:kilnbase_app", kb_port, env, args.server, args.workers)
        )
        processes.append(
            start_server("bench.records_servers:bare_app", bare_port, env, args.server, args.workers)
        )
        wait_ready(f"http://127.0.0.1:{kb_port}/api/health")
        wait_ready(f"http://127.0.0.1:{bare_port}/case/get_one")
        api_key = json.loads((workdir / "data" / "keys.json").read_text())["api_key"]

        print(
            f"server: {args.server} x{args.workers} worker(s); concurrency {args.concurrency}; "
            f"{args.seconds:.0f}s per measurement; embedded Postgres"
        )
        columns = ("(a) psycopg", "(b) bare Starlette", "(c) Kilnbase")
        header = f"{'case':<10} " + " ".join(f"{c:>22}" for c in columns) + f" {'c/b':>6} {'c/a':>6}"
        print(header)
        print("-" * len(header))
        # Every case once through both servers first: imports, plan caches and pools are warm for all.
        for case in CASES:
            if case.name in wanted:
                warm = http_request(case.method, f"/case/{case.name}", case.body_bytes, None)
                asyncio.run(http_load(bare_port, warm, case.status, args.concurrency, 0.5))
                warm = http_request(case.method, f"/api/database{case.path}", case.body_bytes, api_key)
                asyncio.run(http_load(kb_port, warm, case.status, args.concurrency, 0.5))
        for case in CASES:
            if case.name not in wanted:
                continue
            body = case.body_bytes
            direct = asyncio.run(
                direct_load(conninfo, statements[case.name], body, args.concurrency, args.seconds)
            )
            bare_request = http_request(case.method, f"/case/{case.name}", body, None)
            bare = asyncio.run(
                http_load(bare_port, bare_request, case.status, args.concurrency, args.seconds)
            )
            kb_request = http_request(case.method, f"/api/database{case.path}", body, api_key)
            kilnbase = asyncio.run(
                http_load(kb_port, kb_request, case.status, args.concurrency, args.seconds)
            )

            def cell(result: Result) -> str:
                return f"{result.rps:7.0f}/s {result.percentile(0.5):5.1f}/{result.percentile(0.99):5.1f}ms"

            print(
                f"{case.name:<10} {cell(direct):>22} {cell(bare):>22} {cell(kilnbase):>22} "
                f"{kilnbase.rps / bare.rps:6.2f} {kilnbase.rps / direct.rps:6.2f}",
                flush=True,
            )
        print("cells: requests/s p50/p99 ms; c/b = the share of the Python floor reached (target 0.8)")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        cluster.close()


if __name__ == "__main__":
    main()
