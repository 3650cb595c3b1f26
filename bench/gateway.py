"""Model gateway benchmark: what Kilnbase adds on top of calling the upstream directly, in the same run.

Starts the scripted OpenRouter-compatible upstream (uvicorn, async, recording nothing: ~70-90 us of CPU a
request, so not the bottleneck) and a real `kilnbase serve` (uvicorn, one process; or granian with
`--workers N`; embedded Postgres, usage ledger on) pointed at it, and, when given, the LiteLLM proxy (plain
proxy mode, one worker) on the same upstream. Then it sends the same chat request straight to the upstream,
through Kilnbase and through LiteLLM, at concurrency 1, 16 and 64, streaming and not, and prints, per
target: p50/p99 latency and what the gateway adds to the direct call's, throughput, the server's CPU per
request (the server process; for Kilnbase also its Postgres), and, for streams, the time to first token
added (median of sequential calls). Finally it sends `--memory-requests` more requests through Kilnbase and
prints its resident memory along the way. The load generator is `wrk` when installed (Debian package `wrk`;
a Python client tops out near the rates measured here), else an httpx2 client.

LiteLLM is not a project dependency: install `litellm[proxy]==1.106.2` in a venv of its own, pass its
`litellm` command with --litellm. Targets (issue 5): p50 added under 1 ms with one client, p99 added under
5 ms at concurrency 16, at least 25x LiteLLM's throughput, memory flat over 100,000 requests.

    .venv/bin/python -m bench.gateway [--seconds 5] [--memory-requests 100000] [--litellm PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2
import psutil
from tests.support.servers import ServerProcess, free_port

BODY = {
    "model": "openai/gpt-4o-mini",
    "messages": [{"role": "user", "content": "benchmark"}],
    "max_tokens": 32,
}
LITELLM_KEY = "sk-" + secrets.token_hex(24)
UPSTREAM_KEY = "sk-or-v1-bench"

#: wrk's Lua side: a POST with the body and key from the environment; at the end, one JSON line.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("WRK_KEY")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "seconds": %f, "non2xx": %d, "errors": %d, "p50": %f, "p99": %f}\\n',
    summary.requests, summary.duration / 1e6, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


@dataclass
class Run:
    p50: float  # ms
    p99: float  # ms
    rate: float  # requests/s
    requests: int


class Target:
    """A server under test: its chat URL, key, and the processes whose CPU counts as its cost."""

    def __init__(
        self,
        name: str,
        url: str,
        key: str,
        process: psutil.Process | None = None,
        postmaster: psutil.Process | None = None,
    ) -> None:
        self.name, self.url, self.key = name, url, key
        self.process, self.postmaster = process, postmaster

    def cpu(self) -> tuple[float, float]:
        """(server CPU seconds, its Postgres's CPU seconds)."""
        server = postgres = 0.0
        for root in (self.process, self.postmaster):
            if root is None:
                continue
            for proc in [root, *root.children(recursive=True)]:
                try:
                    times = proc.cpu_times()
                    is_postgres = proc.name() == "postgres"
                except psutil.NoSuchProcess:
                    continue
                if is_postgres:
                    postgres += times.user + times.system
                elif root is self.process:
                    server += times.user + times.system
        return server, postgres

    def rss_mib(self) -> float:
        """Resident memory of the server and its workers (not its Postgres)."""
        assert self.process is not None
        total = 0
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                if proc.name() != "postgres":
                    total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return float(total) / 2**20


def postmaster_of(data_dir: Path) -> psutil.Process | None:
    """The embedded Postgres of a data directory (pg_ctl detaches it from the server process)."""
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(data_dir) in " ".join(proc.info["cmdline"] or []):
            parent = proc.parent()
            return parent if parent is not None and parent.name() == "postgres" else proc
    return None


def wrk_run(target: Target, concurrency: int, stream: bool, scratch: Path, seconds: float) -> Run:
    script = scratch / "post.lua"
    script.write_text(WRK_SCRIPT)
    env = {
        **os.environ,
        "WRK_BODY": json.dumps({**BODY, "stream": stream}),
        "WRK_KEY": target.key,
    }
    duration = f"{max(1, round(seconds))}s"
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{duration}",
            "--timeout",
            "30s",
            "-s",
            str(script),
            target.url,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(row for row in out.splitlines() if row.startswith("WRK "))
    figures = json.loads(line[4:])
    if figures["non2xx"] or figures["errors"]:
        raise RuntimeError(f"{target.name}: {figures['non2xx']} non-2xx, {figures['errors']} errors\n{out}")
    return Run(figures["p50"], figures["p99"], figures["requests"] / figures["seconds"], figures["requests"])


async def _python_run(target: Target, concurrency: int, stream: bool, total: int) -> tuple[Run, list[float]]:
    """The fallback load generator, and the time-to-first-token probe: (run, ttft ms per request)."""
    latencies: list[float] = []
    ttfts: list[float] = []
    body = {**BODY, "stream": stream}
    queue = iter(range(total))
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"authorization": f"Bearer {target.key}"}
    async with httpx2.AsyncClient(limits=limits, timeout=60, headers=headers) as client:

        async def worker() -> None:
            for _ in queue:
                started = time.perf_counter()
                if stream:
                    async with client.stream("POST", target.url, json=body) as response:
                        first = None
                        async for line in response.aiter_lines():
                            if first is None and line.startswith("data: {"):
                                first = time.perf_counter()
                        assert response.status_code == 200, response.status_code
                    ttfts.append(((first or time.perf_counter()) - started) * 1000)
                else:
                    response = await client.post(target.url, json=body)
                    assert response.status_code == 200, response.text
                latencies.append((time.perf_counter() - started) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    run = Run(
        ordered[len(ordered) // 2],
        ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        total / elapsed,
        total,
    )
    return run, ttfts


def measure(
    target: Target, concurrency: int, stream: bool, scratch: Path, seconds: float, use_wrk: bool
) -> tuple[Run, float, float]:
    """(run, server CPU us/request, Postgres CPU us/request)."""
    server_before, pg_before = target.cpu()
    if use_wrk:
        run = wrk_run(target, concurrency, stream, scratch, seconds)
    else:
        total = int(seconds * (300 if concurrency == 1 else 800))
        run, _ = asyncio.run(_python_run(target, concurrency, stream, total))
    server_after, pg_after = target.cpu()
    return (
        run,
        (server_after - server_before) / run.requests * 1e6,
        (pg_after - pg_before) / run.requests * 1e6,
    )


def ttft_median(target: Target, total: int) -> float:
    _run, ttfts = asyncio.run(_python_run(target, 1, True, total))
    return statistics.median(ttfts)


def start_litellm(command: str, upstream_port: int, scratch: Path) -> tuple[subprocess.Popen[bytes], str]:
    """LiteLLM's proxy in plain mode (no database, no Redis), one worker, on the same upstream."""
    config = scratch / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: openai/gpt-4o-mini\n"
        "    litellm_params:\n"
        "      model: openai/openai/gpt-4o-mini\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/api/v1\n"
        f"      api_key: {UPSTREAM_KEY}\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_MASTER_KEY": LITELLM_KEY,
    }
    log = (scratch / "litellm.log").open("wb")
    process = subprocess.Popen(
        [command, "--config", str(config), "--port", str(port), "--num_workers", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx2.get(url + "/health/liveliness", timeout=1).status_code == 200:
                return process, url + "/v1/chat/completions"
        except httpx2.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"LiteLLM did not start; see {scratch / 'litellm.log'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per scenario and target")
    parser.add_argument("--memory-requests", type=int, default=100_000)
    parser.add_argument("--ttft-requests", type=int, default=200)
    parser.add_argument("--litellm", help="the `litellm` command of a venv with litellm[proxy]==1.106.2")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python client even if wrk is there")
    parser.add_argument("--workers", type=int, default=1, help="kilnbase serve --workers (granian when > 1)")
    args = parser.parse_args()
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk

    scratch = Path(tempfile.mkdtemp(prefix="kilnbase-bench-"))
    scratch.chmod(0o755)  # embedded Postgres drops to 'nobody' when run as root and must enter it
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_openrouter", "--port", str(upstream_port)]
    )
    api_key = "ik_" + secrets.token_hex(32)
    gateway = ServerProcess(
        scratch / "data",
        env={
            "OPENROUTER_BASE_URL": f"http://127.0.0.1:{upstream_port}/api/v1",
            "OPENROUTER_API_KEY": UPSTREAM_KEY,
            "ACCESS_API_KEY": api_key,
            "LOG_LEVEL": "warning",
        },
        args=["--workers", str(args.workers)] if args.workers > 1 else [],
    )
    litellm: subprocess.Popen[bytes] | None = None
    try:
        for _ in range(200):
            try:
                httpx2.get(f"http://127.0.0.1:{upstream_port}/api/v1/models", timeout=1)
                break
            except httpx2.TransportError:
                time.sleep(0.05)
        gateway.start(timeout=120)
        assert gateway.process is not None
        direct = Target("direct", f"http://127.0.0.1:{upstream_port}/api/v1/chat/completions", UPSTREAM_KEY)
        kilnbase = Target(
            "kilnbase",
            gateway.url + "/v1/chat/completions",
            api_key,
            psutil.Process(gateway.process.pid),
            postmaster_of(scratch / "data"),
        )
        targets = [kilnbase]
        if args.litellm:
            litellm, litellm_url = start_litellm(args.litellm, upstream_port, scratch)
            targets.append(Target("litellm", litellm_url, LITELLM_KEY, psutil.Process(litellm.pid)))
        for target in targets:  # warm up: catalog, pools, policy, first-request work
            asyncio.run(_python_run(target, 4, False, 100))
            asyncio.run(_python_run(target, 2, True, 20))
        rss_start = kilnbase.rss_mib()

        print(
            f"load generator: {'wrk 1 thread' if use_wrk else 'httpx2 (Python)'}; "
            f"{args.seconds:.0f} s per scenario and target; cores: {os.cpu_count()} (shared by the client, "
            "the upstream, the servers and Postgres)"
        )
        print(
            "servers: fake upstream = uvicorn, 1 process; kilnbase = `kilnbase serve`"
            + (f" --workers {args.workers} (granian);" if args.workers > 1 else " (uvicorn), 1 process;")
            + (" litellm = `litellm --num_workers 1`" if args.litellm else "")
        )
        print(
            f"\n{'scenario':<12}{'target':<10}{'p50 ms':>9}{'p99 ms':>9}{'p50 +ms':>9}{'p99 +ms':>9}"
            f"{'req/s':>9}{'kb/litellm':>11}{'ttft +ms':>10}{'CPU us/req':>12}{'PG us/req':>10}"
        )
        rates: dict[tuple[bool, int, str], float] = {}
        for stream in (False, True):
            for concurrency in (1, 16, 64):
                name = ("stream" if stream else "json") + f" c={concurrency}"
                base, _cpu, _pg = measure(direct, concurrency, stream, scratch, args.seconds, use_wrk)
                ttft_base = ttft_median(direct, args.ttft_requests) if stream and concurrency == 1 else None
                print(f"{name:<12}{'direct':<10}{base.p50:>9.2f}{base.p99:>9.2f}{'':>18}{base.rate:>9.0f}")
                for target in targets:
                    run, cpu, pg = measure(target, concurrency, stream, scratch, args.seconds, use_wrk)
                    rates[(stream, concurrency, target.name)] = run.rate
                    ttft = ""
                    if ttft_base is not None:
                        requests = args.ttft_requests if target.name == "kilnbase" else 50
                        ttft = f"{ttft_median(target, requests) - ttft_base:+.2f}"
                    times = ""
                    if target.name == "litellm":  # Kilnbase's throughput as a multiple of LiteLLM's
                        times = f"{rates[(stream, concurrency, 'kilnbase')] / run.rate:.0f}x"
                    print(
                        f"{'':<12}{target.name:<10}{run.p50:>9.2f}{run.p99:>9.2f}{run.p50 - base.p50:>+9.2f}"
                        f"{run.p99 - base.p99:>+9.2f}{run.rate:>9.0f}{times:>11}{ttft:>10}{cpu:>12.0f}"
                        f"{(f'{pg:.0f}' if target.name == 'kilnbase' else ''):>10}"
                    )
        rss_scenarios = kilnbase.rss_mib()
        if args.litellm:
            litellm_target = targets[1]
            assert litellm_target.process is not None
            rss = sum(
                p.memory_info().rss
                for p in [litellm_target.process, *litellm_target.process.children(recursive=True)]
            )
            print(f"\nLiteLLM resident memory (all its processes) after its runs: {rss / 2**20:.0f} MiB")
        print(
            f"\nkilnbase resident memory: {rss_start:.0f} MiB after warm-up, {rss_scenarios:.0f} MiB after "
            f"the scenarios; then {args.memory_requests} more requests (json, c=16):"
        )
        step = max(1, args.memory_requests // 4)
        rate = rates[(False, 16, "kilnbase")]
        sent = 0
        while sent < args.memory_requests:
            count = min(step, args.memory_requests - sent)
            if use_wrk:  # wrk runs for a time: aim at `count` requests from the rate measured above
                sent += wrk_run(kilnbase, 16, False, scratch, max(1.0, count / rate)).requests
            else:
                sent += asyncio.run(_python_run(kilnbase, 16, False, count))[0].requests
            print(f"  after {sent:>7} requests: {kilnbase.rss_mib():.0f} MiB")
    finally:
        if litellm is not None:
            litellm.terminate()
            litellm.wait(timeout=20)
        gateway.stop()
        upstream.terminate()
        upstream.wait(timeout=10)


if __name__ == "__main__":
    main()
