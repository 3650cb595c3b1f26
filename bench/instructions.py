"""Machine instructions per records request, (b) the bare handler against (c) Kilnbase, counted by callgrind.

A third measure beside `bench.records` (requests/s over HTTP: what a change is worth, with 10% noise on a
shared host) and `bench.records_profile --bytecodes` (Python bytecodes: steady, but blind to C work, such as
orjson, psycopg's C parts, the interpreter's cost per call, a log line's write). Callgrind counts every
instruction the server's process executes, C included, and other load on the machine does not change the
count: the same commit counts within about 3% from run to run (how often psycopg polls for a result that
has not arrived yet varies).

Each app runs in its own process under `valgrind --tool=callgrind --instr-atstart=no`: uninstrumented
(a few times slower) while it starts and warms up, instrumented only while the measured requests run. A
small C helper, compiled here from valgrind's `callgrind.h` (a client request is inline assembly, which
Python cannot issue), brackets them. Postgres runs outside valgrind, so, as in `records_profile`, only the
Python side of each request is counted, driven through ASGI by one client with no HTTP server.

Kilnbase runs without its background work (claim loops, listeners, sweeps): under valgrind a request
takes 50 times its usual time, so that work would be counted against each request, and how much of it
falls into the window depends on the machine's load.

Needs valgrind (with its headers, Debian's `valgrind` package) and a C compiler.

    python -m bench.instructions [--requests 100] [--cases get_one,post_one]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import psycopg
from tests.support.postgres import TestCluster

from bench.records import CASES, SEED, render_statements
from bench.records_profile import Lifespan, drive, scope_for

ROOT = Path(__file__).resolve().parents[1]
#: Requests before measuring (uninstrumented): pools fill, statements get prepared, lazy imports are done.
WARMUP_REQUESTS = 150

_HELPER = """
#include <valgrind/callgrind.h>
void measure_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void measure_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS; }
"""


def build_helper(workdir: Path) -> Path:
    source, library = workdir / "measure.c", workdir / "libmeasure.so"
    source.write_text(_HELPER)
    subprocess.run(
        ["cc", "-O2", "-shared", "-fPIC", "-o", str(library), str(source)], check=True, capture_output=True
    )
    return library


async def mcp_built(app: Any, api_key: str) -> None:
    """Returns once the app has built its MCP server, in a thread after startup: the SDK's imports would
    otherwise fall into the first measured window. A request to /mcp is answered only after the build."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: dict[str, Any]) -> None:
        return None

    scope = scope_for(CASES[0], "/mcp", api_key)
    await app(dict(scope, state={}), receive, send)


async def child(kind: str, cases: list[str], requests: int, helper: Path) -> None:
    """In the process under valgrind: one measured window per case, each written to stdout as `case count`,
    in the order of callgrind's dumps."""
    from bench.records_servers import bare_app, kilnbase_app

    measure = ctypes.CDLL(str(helper))
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        app = kilnbase_app(background=False) if kind == "kb" else bare_app()
        life = Lifespan(app)
        await life.start()
    api_key = ""
    if kind == "kb":
        api_key = json.loads((Path(os.environ["KB_BENCH_DATA"]) / "keys.json").read_text())["api_key"]
        await mcp_built(app, api_key)
    try:
        for case in CASES:
            if case.name not in cases:
                continue
            path = f"/api/database{case.path}" if kind == "kb" else f"/case/{case.name}"
            scope = scope_for(case, path, api_key or None)
            count = max(requests // 20, 5) if case.name.startswith("post_1000") else requests
            await drive(app, scope, case.body_bytes, case.status, WARMUP_REQUESTS, 1)
            measure.measure_start()
            await drive(app, scope, case.body_bytes, case.status, count, 1)
            measure.measure_stop()
            print(f"{case.name} {count}", flush=True)
    finally:
        await life.stop()


def count(
    kind: str, cases: str, requests: int, helper: Path, env: dict[str, str], out: Path
) -> dict[str, float]:
    """Instructions per request by case for one app."""
    out.mkdir()
    command = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}/callgrind.%p",
        sys.executable, "-m", "bench.instructions", "--child", kind, "--cases", cases,
        "--requests", str(requests), "--helper", str(helper),
    ]  # fmt: skip
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the {kind} run failed:\n{result.stderr[-3000:]}")
    windows = [line.split() for line in result.stdout.splitlines() if line.strip()]
    dumps = sorted(out.glob("callgrind.*.*"), key=lambda p: int(p.suffix[1:]))
    totals = []
    for dump in dumps:
        found = re.search(r"^totals: (\d+)", dump.read_text(), re.M)
        if found is None:
            raise SystemExit(f"no totals in {dump}")
        totals.append(int(found.group(1)))
    if len(totals) != len(windows):
        raise SystemExit(f"{len(windows)} windows but {len(totals)} callgrind dumps in {out}")
    return {name: total / int(n) for (name, n), total in zip(windows, totals, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--cases", default="get_one,post_one")
    parser.add_argument("--child", choices=("bare", "kb"), help=argparse.SUPPRESS)
    parser.add_argument("--helper", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.child, args.cases.split(","), args.requests, args.helper))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    workdir = Path(tempfile.mkdtemp(prefix="kb-instructions-"))
    cluster = TestCluster()
    try:
        conninfo = cluster.create_database("bench")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(SEED)
        (workdir / "cases.json").write_bytes(orjson.dumps(asyncio.run(render_statements(conninfo))))
        helper = build_helper(workdir)
        env = dict(
            os.environ,
            DATABASE_URL=conninfo,
            KB_BENCH_DATA=str(workdir / "data"),
            KB_BENCH_CASES=str(workdir / "cases.json"),
            KILNBASE_DB_POOL_MIN="8",
            PYTHONHASHSEED="0",
        )
        bare = count("bare", args.cases, args.requests, helper, env, workdir / "bare")
        kb = count("kb", args.cases, args.requests, helper, env, workdir / "kb")
        print(f"{'case':<11} {'bare':>10} {'kb':>10} {'b/c':>6}   (instructions per request, one client)")
        for name, b in bare.items():
            print(f"{name:<11} {b:>10,.0f} {kb[name]:>10,.0f} {b / kb[name]:6.3f}")
    finally:
        cluster.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
