"""Model gateway benchmark: what Kilnbase adds on top of calling the upstream directly, in the same run.

Starts the scripted OpenRouter-compatible upstream (uvicorn, async: not the bottleneck) and a real
`kilnbase serve` (embedded Postgres, ledger on) pointed at it, and, when given, the LiteLLM proxy (plain
proxy mode, one worker) on the same upstream; then sends the same chat request straight to the upstream,
through Kilnbase and through LiteLLM, at concurrency 1, 16 and 64, streaming and not. Prints p50/p99 latency
added, time-to-first-token added, throughput, and resident memory before and after the run. LiteLLM is not
a project dependency: install `litellm[proxy]==1.106.2` in a venv of its own and pass its `litellm` command.
Its figures from reference/performance-floor.md are quoted as well.

    .venv/bin/python -m bench.gateway [--requests 2000] [--memory-requests 20000] [--litellm PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
import psutil
from tests.support.servers import ServerProcess, free_port

LITELLM_ANCHOR = {
    "p50_added_ms_c1": 21.7,
    "p99_added_ms_c1": 29.7,
    "throughput_c16_per_worker": 38.0,
    "ttft_added_ms_c1": "20-25",
    "rss_mib": "309 -> 407 after 20,000 requests",
}
BODY = {
    "model": "openai/gpt-4o-mini",
    "messages": [{"role": "user", "content": "benchmark"}],
    "max_tokens": 32,
}


LITELLM: list[subprocess.Popen[bytes]] = []
LITELLM_KEY = "sk-" + secrets.token_hex(24)


def start_litellm(command: str, upstream_port: int, scratch: Path) -> str:
    """LiteLLM's proxy in plain mode (no database, no Redis), one worker, on the same upstream."""
    config = scratch / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: openai/gpt-4o-mini\n"
        "    litellm_params:\n"
        "      model: openai/openai/gpt-4o-mini\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/api/v1\n"
        "      api_key: sk-or-v1-bench\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_MASTER_KEY": LITELLM_KEY,
    }
    log = (scratch / "litellm.log").open("wb")
    LITELLM.append(
        subprocess.Popen(
            [command, "--config", str(config), "--port", str(port), "--num_workers", "1"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx2.get(url + "/health/liveliness", timeout=1).status_code == 200:
                return url + "/v1/chat/completions"
        except httpx2.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"LiteLLM did not start; see {scratch / 'litellm.log'}")


def cpu_seconds(process: psutil.Process) -> float:
    """CPU time of a server and its worker processes (not its embedded Postgres, also a child)."""
    times = process.cpu_times()
    total = times.user + times.system
    for child in process.children(recursive=True):
        if "postgres" not in child.name():
            child_times = child.cpu_times()
            total += child_times.user + child_times.system
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(
    url: str, key: str, total: int, concurrency: int, stream: bool
) -> tuple[list[float], list[float], float]:
    """(latencies ms, time-to-first-token ms, requests/s)."""
    latencies: list[float] = []
    ttfts: list[float] = []
    body = {**BODY, "stream": stream}
    queue = iter(range(total))
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(
        limits=limits, timeout=60, headers={"authorization": f"Bearer {key}"}
    ) as client:

        async def worker() -> None:
            for _ in queue:
                started = time.perf_counter()
                if stream:
                    async with client.stream("POST", url, json=body) as response:
                        first = None
                        async for line in response.aiter_lines():
                            if first is None and line.startswith("data: {"):
                                first = time.perf_counter()
                        assert response.status_code == 200, response.status_code
                    ttfts.append(((first or time.perf_counter()) - started) * 1000)
                else:
                    response = await client.post(url, json=body)
                    assert response.status_code == 200, response.text
                latencies.append((time.perf_counter() - started) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return latencies, ttfts, total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--memory-requests", type=int, default=20000)
    parser.add_argument("--litellm", help="the `litellm` command of a venv with litellm[proxy]==1.106.2")
    args = parser.parse_args()

    upstream_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_openrouter", "--port", str(upstream_port)]
    )
    scratch = Path(tempfile.mkdtemp(prefix="kilnbase-bench-"))
    scratch.chmod(0o755)  # embedded Postgres drops to 'nobody' when run as root and must enter it
    data_dir = scratch / "data"
    api_key = "ik_" + secrets.token_hex(32)
    gateway = ServerProcess(
        data_dir,
        env={
            "OPENROUTER_BASE_URL": f"http://127.0.0.1:{upstream_port}/api/v1",
            "OPENROUTER_API_KEY": "sk-or-v1-bench",
            "ACCESS_API_KEY": api_key,
            "LOG_LEVEL": "warning",
        },
    )
    try:
        for _ in range(200):
            try:
                httpx2.get(f"http://127.0.0.1:{upstream_port}/api/v1/models", timeout=1)
                break
            except httpx2.TransportError:
                time.sleep(0.05)
        gateway.start(timeout=120)
        assert gateway.process is not None
        litellm_url = start_litellm(args.litellm, upstream_port, scratch) if args.litellm else None
        process = psutil.Process(gateway.process.pid)
        direct_url = f"http://127.0.0.1:{upstream_port}/api/v1/chat/completions"
        gateway_url = gateway.url + "/v1/chat/completions"
        asyncio.run(run(gateway_url, api_key, 200, 4, False))  # warm up: catalog, pools, policy
        rss_start = process.memory_info().rss / 2**20
        targets = [("kilnbase", gateway_url, api_key)]
        if litellm_url:
            asyncio.run(run(litellm_url, LITELLM_KEY, 50, 2, False))  # warm up
            targets.append(("litellm", litellm_url, LITELLM_KEY))
        print(
            f"{'scenario':<14}{'target':<10}{'p50/p99 ms':>18}{'added p50/p99 ms':>20}"
            f"{'req/s':>8}{'ttft+ p50':>11}{'CPU us/req':>12}"
        )
        for stream in (False, True):
            for concurrency in (1, 16, 64):
                total = args.requests if concurrency > 1 else max(200, args.requests // 4)
                name = ("stream" if stream else "json") + f" c={concurrency}"
                d_lat, d_ttft, d_rps = asyncio.run(
                    run(direct_url, "sk-or-v1-bench", total, concurrency, stream)
                )
                print(
                    f"{name:<14}{'direct':<10}{percentile(d_lat, 0.5):>8.2f}/{percentile(d_lat, 0.99):<9.2f}"
                    f"{'':>20}{d_rps:>8.0f}"
                )
                for target, url, key in targets:
                    count = total if target == "kilnbase" else min(total, 300)
                    server_process = process if target == "kilnbase" else psutil.Process(LITELLM[0].pid)
                    cpu_before = cpu_seconds(server_process)
                    g_lat, g_ttft, g_rps = asyncio.run(run(url, key, count, concurrency, stream))
                    cpu_us = (cpu_seconds(server_process) - cpu_before) / count * 1e6
                    added50 = percentile(g_lat, 0.5) - percentile(d_lat, 0.5)
                    added99 = percentile(g_lat, 0.99) - percentile(d_lat, 0.99)
                    ttft = f"{statistics.median(g_ttft) - statistics.median(d_ttft):+.2f}" if stream else "-"
                    print(
                        f"{'':<14}{target:<10}{percentile(g_lat, 0.5):>8.2f}/{percentile(g_lat, 0.99):<9.2f}"
                        f"{added50:>+9.2f}/{added99:<+10.2f}{g_rps:>8.0f}{ttft:>11}{cpu_us:>12.0f}"
                    )
        rss_mid = process.memory_info().rss / 2**20
        if LITELLM:
            litellm_rss = sum(
                p.memory_info().rss for p in psutil.Process(LITELLM[0].pid).children(recursive=True)
            )
            litellm_rss += psutil.Process(LITELLM[0].pid).memory_info().rss
            print(
                f"\nLiteLLM resident memory (all its processes) after its runs: {litellm_rss / 2**20:.0f} MiB"
            )
        asyncio.run(run(gateway_url, api_key, args.memory_requests, 16, False))
        rss_end = process.memory_info().rss / 2**20
        print(
            f"\ngateway resident memory: {rss_start:.0f} MiB after warm-up, {rss_mid:.0f} MiB after the "
            f"scenarios, {rss_end:.0f} MiB after {args.memory_requests} more requests"
        )
        print(
            "anchor (LiteLLM 1.106.2 proxy, 1 worker, same machine kind, performance-floor.md): "
            f"{LITELLM_ANCHOR}"
        )
        print(f"cores: {os.cpu_count()}; one gateway process; client, upstream and gateway share the machine")
    finally:
        for child in LITELLM:
            child.terminate()
            child.wait(timeout=20)
        gateway.stop()
        upstream.terminate()
        upstream.wait(timeout=10)


if __name__ == "__main__":
    main()
