"""Edge functions benchmark: an invocation through Kilnbase against a bare `deno serve` of the same code, in
the same run, and the time from deploy to the first successful call.

Starts a real `kilnbase serve` (uvicorn, one process, embedded Postgres, bubblewrap on where the kernel
allows it, its functions host on a port of its own) and deploys one function; starts `deno serve` (one
process, the same Deno binary) on the same file. Then `wrk` (one thread) sends GETs at 1 client (latency:
p50/p99, and what Kilnbase adds) and at 16 clients (throughput) to each: the bare `deno serve`, Kilnbase's
functions host (`/<slug>`, what `createClient({ functionsUrl })` calls), and the API's `/functions/<slug>`.
The deploy is timed three ways: the POST (which runs `deno check`), and from the POST's start to the first
200 from the host and from `/functions/:slug`.

Targets (issue 13): warm p50 under 5 ms added, at least 50% of bare `deno serve`'s throughput at 16
clients, deploy-to-serving under 2 s.

    .venv/bin/python -m bench.functions [--seconds 5] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import deno  # type: ignore[import-untyped]
import httpx
from tests.support.servers import ServerProcess, free_port

from bench.gateway import WRK_SCRIPT as GATEWAY_WRK_SCRIPT

CODE = "export default { fetch(_req: Request) { return new Response('ok'); } };\n"

#: wrk's report at the end, as the gateway bench writes it (one JSON line), without its POST set-up.
WRK_SCRIPT = GATEWAY_WRK_SCRIPT[GATEWAY_WRK_SCRIPT.index("done = function") :]


def wrk(url: str, clients: int, seconds: float, script: Path) -> dict[str, float]:
    result = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{round(seconds)}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("WRK "))
    stats: dict[str, float] = json.loads(line[4:])
    stats["rps"] = stats["requests"] / stats["seconds"]
    return stats


def wait_for(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.01)
    raise TimeoutError(url)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--workers", type=int, default=1, help="API processes (kilnbase serve --workers)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="bench-functions-"))
    work.chmod(0o755)  # the embedded Postgres runs as nobody when the bench runs as root
    script = work / "report.lua"
    script.write_text(WRK_SCRIPT)
    host_port = free_port()
    server = ServerProcess(
        work / "data",
        env={"KILNBASE_LOG_LEVEL": "warning", "KILNBASE_FUNCTIONS_HOST_PORT": str(host_port)},
        args=["--workers", str(args.workers)] if args.workers > 1 else [],
    )
    bare: subprocess.Popen[bytes] | None = None
    try:
        server.start(timeout=120)
        keys = json.loads((server.data_dir / "keys.json").read_text())
        admin = {"Authorization": f"Bearer {keys['api_key']}"}

        started = time.perf_counter()
        deployed = httpx.post(
            server.url + "/api/functions",
            json={"name": "bench", "code": CODE},
            headers=admin,
            timeout=120,
        )
        deploy_seconds = time.perf_counter() - started
        assert deployed.status_code == 201, deployed.text
        host_url = f"http://127.0.0.1:{host_port}/bench"
        wait_for(host_url)
        host_seconds = time.perf_counter() - started
        wait_for(server.url + "/functions/bench")
        serving_seconds = time.perf_counter() - started

        code_file = work / "bare.ts"
        code_file.write_text(CODE)
        port = free_port()
        bare = subprocess.Popen(
            [
                deno.find_deno_bin(),
                "serve",
                "--quiet",
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                str(code_file),
            ],
            env={**os.environ, "DENO_DIR": str(work / "deno")},
        )
        bare_url = f"http://127.0.0.1:{port}/"
        wait_for(bare_url)

        results: dict[str, dict[int, dict[str, float]]] = {}
        targets = (
            ("deno serve", bare_url),
            ("kb host", host_url),
            ("kb /functions", server.url + "/functions/bench"),
        )
        for name, url in targets:
            wrk(url, 4, 1, script)  # warm up
            results[name] = {clients: wrk(url, clients, args.seconds, script) for clients in (1, 16)}

        print(f"deploy (POST with deno check): {deploy_seconds * 1000:.0f} ms")
        print(f"deploy to first successful call, host: {host_seconds * 1000:.0f} ms (target < 2000)")
        print(f"deploy to first successful call, /functions: {serving_seconds * 1000:.0f} ms")
        print(f"{'target':<14} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>9} {'errors':>7}")
        for name, by_clients in results.items():
            for clients, stats in by_clients.items():
                errors = int(stats["non2xx"] + stats["errors"])
                print(
                    f"{name:<14} {clients:>7} {stats['p50']:>8.2f} {stats['p99']:>8.2f} "
                    f"{stats['rps']:>9.0f} {errors:>7}"
                )
        bare_result = results["deno serve"]
        for name in ("kb host", "kb /functions"):
            added = results[name][1]["p50"] - bare_result[1]["p50"]
            ratio = results[name][16]["rps"] / bare_result[16]["rps"]
            print(
                f"{name}: warm p50 added at 1 client {added:.2f} ms (target < 5); throughput at 16 "
                f"clients {ratio:.0%} of bare deno serve (target >= 50%)"
            )
    finally:
        if bare is not None:
            bare.kill()
            bare.wait()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
