"""Records API benchmark: each case against its floor, in the same run.

For single-row GET, 100-row filtered+ordered GET, an embed, single POST, 1,000-row bulk POST (also with
`?columns=`, as postgrest-js sends it), PATCH and RPC, at a fixed concurrency, it measures requests/s and
p50/p99 of
  (a) the same SQL sent straight to Postgres (psycopg pool, the same role+claims transaction in one pipeline,
      `Database.statement_as_caller`),
  (b) a bare Starlette handler running that same SQL on the same server stack (the floor for Python HTTP),
  (c) Kilnbase's records API,
and prints c/b (target: 0.95 or more in every case) and c/a (target for single-row GET: 0.8 or more). The
statement for (a) and (b) is the one the records engine renders for the request, so all three do the same
database work.

Load comes from wrk (one thread) when it is installed, else from an asyncio client. a, b and c are each
measured once a round, in an order that turns, over several rounds; each ratio is taken within a round
(the machine's speed drifts between rounds) and the medians are printed, with each server's CPU time per
request (user + system over all its processes): on a shared 2-core machine that is far steadier than
requests/s.
The Kilnbase server logs as `kilnbase serve` does (one JSON line per request, written to /dev/null).

    python -m bench.records [--seconds 3] [--concurrency 16] [--server granian|uvicorn] [--workers 2]
                            [--rounds 3] [--client wrk|python] [--skip-direct] [--cases get_one,patch]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import psycopg
from tests.support.postgres import TestCluster, database_for
from tests.support.servers import free_port

from bench.records_servers import ADMIN, statement_params
from kilnbase.config import Settings
from kilnbase.db.schema_cache import load_snapshot
from kilnbase.records.execution import has_rows
from kilnbase.records.query_grammar import parse_query
from kilnbase.records.read_plan import build_read_plan
from kilnbase.records.sql_builder import (
    call_source,
    function_read_statement,
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
    # The same bulk insert as postgrest-js (and so @insforge/sdk) sends it: with the columns named.
    Case(
        "post_1000c",
        "POST",
        "/records/bench_events?columns=name,score",
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
            from_args, call = call_source(routine, "{}", ["n"])
            node = build_read_plan(snapshot, items, query, alias="bench_top")
            statement = function_read_statement(
                node, from_args, call, count_exact=False, limit=None, offset=0
            )
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
    p50_ms: float | None = None  # given by the client when it keeps no samples (wrk)
    p99_ms: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")

    @property
    def p50(self) -> float:
        return self.p50_ms if self.p50_ms is not None else self.percentile(0.5)

    @property
    def p99(self) -> float:
        return self.p99_ms if self.p99_ms is not None else self.percentile(0.99)


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


async def http_load(
    port: int, request: bytes, expected: int, concurrency: int, seconds: float, *, warmup: bool = True
) -> Result:
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

    if warmup:
        await asyncio.gather(
            *(worker(time.perf_counter() + WARMUP_SECONDS, False) for _ in range(concurrency))
        )
    started = time.perf_counter()
    await asyncio.gather(*(worker(started + seconds, True) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"unexpected statuses {sorted(set(failures))} (expected {expected})")
    return Result(len(latencies), elapsed, latencies)


async def direct_load(
    conninfo: str, case: dict[str, Any], body: bytes, concurrency: int, seconds: float
) -> Result:
    params = statement_params(case, body)
    # As the app connects: requests log in as the authenticator.
    database = database_for(conninfo, Settings(db_pool_min=concurrency, db_pool_max=concurrency))
    await database.open()
    latencies: list[float] = []

    async def worker(deadline: float, record: bool) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            cur = await database.statement_as_caller(ADMIN, case["sql"], params, read_only=case["read_only"])
            if has_rows(cur):
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
        await database.close()
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
    # Output (the request log lines, as `kilnbase serve` writes them) goes nowhere, but is written.
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
    )


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


# ---------------------------------------------------------------------------------------------------------
# measurement: wrk (or the asyncio client) against a server, with the server's CPU time per request


def wait_idle(process: psutil.Process, timeout: float = 60) -> None:
    """Until a server has finished the work it starts once it answers (Kilnbase builds its MCP server then,
    in each worker), so that none of it is counted against the requests measured."""
    deadline = time.monotonic() + timeout
    before = server_cpu_seconds(process)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = server_cpu_seconds(process)
        if now - before < 0.02:  # under 4% of one core: idle but for its timers
            return
        before = now
    raise RuntimeError(f"server {process.pid} still busy after {timeout:.0f} s")


def postgres_process(data_dir: Path) -> psutil.Process:
    """The postmaster of the cluster whose data directory is under `data_dir`."""
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(data_dir) in part for part in proc.info["cmdline"] or ()):
            return proc
    raise RuntimeError(f"no Postgres running under {data_dir}")


def postgres_cpu_seconds(postmaster: psutil.Process) -> float:
    """`server_cpu_seconds` for Postgres, with the processes that ended since it started (autovacuum's
    workers), which the postmaster has reaped."""
    times = postmaster.cpu_times()
    reaped: float = times.children_user + times.children_system
    return server_cpu_seconds(postmaster) + reaped


def server_cpu_seconds(process: psutil.Process) -> float:
    """User+system CPU of a server process and its workers (granian forks them; uvicorn x1 has none)."""
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


_WRK_SCRIPT = """
wrk.method = {method}
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{auth}
done = function(summary, latency, requests)
  io.write(string.format("KB %d %d %d %d %d\\n", summary.requests, summary.errors.status,
    latency:percentile(50), latency:percentile(99), summary.duration))
end
"""


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def wrk_load(
    port: int, case: Case, path: str, token: str | None, concurrency: int, seconds: float, workdir: Path
) -> Result:
    """One wrk run (1 thread: the client should take as little of the 2 cores as it can)."""
    script = workdir / f"{case.name}.lua"
    auth = f'wrk.headers["Authorization"] = {_lua_string("Bearer " + token)}' if token else ""
    script.write_text(
        _WRK_SCRIPT.format(
            method=_lua_string(case.method), body=_lua_string(case.body_bytes.decode()), auth=auth
        )
    )
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("KB "))
    requests, bad_status, p50_us, p99_us, duration_us = (int(x) for x in line.split()[1:])
    if bad_status:
        raise RuntimeError(f"{case.name}: {bad_status} responses were not 2xx/3xx on port {port}")
    # wrk gives percentiles, not samples: two synthetic samples keep Result's interface.
    return Result(requests, duration_us / 1e6, [p50_us / 1e6, p99_us / 1e6], p50_us / 1e3, p99_us / 1e3)


@dataclass
class Measured:
    result: Result
    cpu_us: float  # server CPU per request, microseconds
    pg_cpu_us: float  # Postgres's CPU per request (all its processes), microseconds


def measure(
    client: str,
    postgres: psutil.Process,
    process: psutil.Process,
    port: int,
    case: Case,
    path: str,
    token: str | None,
    concurrency: int,
    seconds: float,
    workdir: Path,
) -> Measured:
    before, pg_before = server_cpu_seconds(process), postgres_cpu_seconds(postgres)
    if client == "wrk":
        result = wrk_load(port, case, path, token, concurrency, seconds, workdir)
    else:
        request = http_request(case.method, path, case.body_bytes, token)
        result = asyncio.run(http_load(port, request, case.status, concurrency, seconds, warmup=False))
    cpu = server_cpu_seconds(process) - before
    pg_cpu = postgres_cpu_seconds(postgres) - pg_before
    requests = max(result.requests, 1)
    return Measured(result, cpu / requests * 1e6, pg_cpu / requests * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="granian")
    parser.add_argument("--workers", type=int, default=2, help="granian x2 is the faster setup on 2 cores")
    parser.add_argument("--rounds", type=int, default=3, help="a, b and c once each a round; medians kept")
    parser.add_argument(
        "--client", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python"
    )
    parser.add_argument("--skip-direct", action="store_true", help="leave out (a), the psycopg-only run")
    parser.add_argument("--cases", default=",".join(c.name for c in CASES))
    args = parser.parse_args()
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
        kb_process, bare_process = psutil.Process(processes[0].pid), psutil.Process(processes[1].pid)
        postgres = postgres_process(cluster.root)
        wait_idle(kb_process)
        wait_idle(bare_process)

        print(
            f"server: {args.server} x{args.workers} worker(s); client: {args.client}; concurrency "
            f"{args.concurrency}; {args.seconds:.0f}s per run; a, b and c in turn over {args.rounds} rounds "
            f"(medians); {os.cpu_count()} cores; embedded Postgres; request log lines on (to /dev/null)"
        )
        header = (
            f"{'case':<10} {'(a) psycopg':>11} {'(b) bare':>22} {'(c) Kilnbase':>22} {'c/b':>5}"
            f" {'c/a':>5} {'cpu b':>7} {'cpu c':>7} {'b/c cpu':>7} {'pg b':>6} {'pg c':>6}"
        )
        print(header)
        print("-" * len(header))
        # Every case once through both servers first: imports, plan caches and pools are warm for all.
        for case in CASES:
            if case.name in wanted:
                path = f"/case/{case.name}"
                measure(
                    args.client,
                    postgres,
                    bare_process,
                    bare_port,
                    case,
                    path,
                    None,
                    args.concurrency,
                    1,
                    workdir,
                )
                path = f"/api/database{case.path}"
                measure(
                    args.client,
                    postgres,
                    kb_process,
                    kb_port,
                    case,
                    path,
                    api_key,
                    args.concurrency,
                    1,
                    workdir,
                )
        for case in CASES:
            if case.name not in wanted:
                continue
            direct_runs: list[float] = []
            bare_runs: list[Measured] = []
            kb_runs: list[Measured] = []
            # Each round runs a, b and c, in an order that turns, so that a drift in the machine's speed
            # over a case's rounds falls on all three alike; ratios are taken within a round.
            order = "bc" if args.skip_direct else "abc"
            for index in range(args.rounds):
                for which in order[index % len(order) :] + order[: index % len(order)]:
                    if which == "a":
                        direct = direct_load(
                            conninfo, statements[case.name], case.body_bytes, args.concurrency, args.seconds
                        )
                        direct_runs.append(asyncio.run(direct).rps)
                        continue
                    process, port, path, token, runs = (
                        (bare_process, bare_port, f"/case/{case.name}", None, bare_runs)
                        if which == "b"
                        else (kb_process, kb_port, f"/api/database{case.path}", api_key, kb_runs)
                    )
                    runs.append(
                        measure(
                            args.client,
                            postgres,
                            process,
                            port,
                            case,
                            path,
                            token,
                            args.concurrency,
                            args.seconds,
                            workdir,
                        )
                    )
            bare, kilnbase = summarize(bare_runs), summarize(kb_runs)
            pairs = list(zip(bare_runs, kb_runs, strict=True))
            c_over_b = statistics.median(c.result.rps / b.result.rps for b, c in pairs)
            cpu_ratio = statistics.median(b.cpu_us / c.cpu_us for b, c in pairs)
            c_over_a = (
                statistics.median(c.result.rps / a for a, c in zip(direct_runs, kb_runs, strict=True))
                if direct_runs
                else float("nan")
            )
            direct_rps = statistics.median(direct_runs) if direct_runs else float("nan")
            print(
                f"{case.name:<10} {direct_rps:9.0f}/s {bare.cell():>22} {kilnbase.cell():>22} "
                f"{c_over_b:5.2f} {c_over_a:5.2f} "
                f"{bare.cpu_us:7.0f} {kilnbase.cpu_us:7.0f} {cpu_ratio:7.2f} "
                f"{bare.pg_cpu_us:6.0f} {kilnbase.pg_cpu_us:6.0f}",
                flush=True,
            )
        print(
            "cells: requests/s p50/p99 ms (medians over rounds); c/b: throughput share of the Python floor "
            "(target 0.95, every case);\nc/a: share of the psycopg-only run (target 0.8, get_one); cpu b/c: "
            "server CPU microseconds per request (user+system, all its processes);\n"
            "b/c cpu: the share of the floor's CPU cost, the less noisy form of c/b; the three ratios are "
            "medians of each round's own ratio;\npg b/c: Postgres's CPU microseconds per request (all its "
            "processes), on the same cores"
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        cluster.close()


@dataclass
class Summary:
    rps: float
    p50: float
    p99: float
    cpu_us: float
    pg_cpu_us: float

    def cell(self) -> str:
        return f"{self.rps:7.0f}/s {self.p50:5.1f}/{self.p99:5.1f}ms"


def summarize(runs: list[Measured]) -> Summary:
    return Summary(
        rps=statistics.median(m.result.rps for m in runs),
        p50=statistics.median(m.result.p50 for m in runs),
        p99=statistics.median(m.result.p99 for m in runs),
        cpu_us=statistics.median(m.cpu_us for m in runs),
        pg_cpu_us=statistics.median(m.pg_cpu_us for m in runs),
    )


if __name__ == "__main__":
    main()
