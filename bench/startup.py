"""Startup benchmark: cold first start and warm restart of `kilnbase serve` to the first healthy response
(and, after a warm restart, to the first answer of `/mcp`, whose server is built once the app is up), and
resident memory and CPU at idle, beside an anchor measured in the same run: the embedded Postgres alone.

    .venv/bin/python -m bench.startup [--runs 3] [--idle-seconds 5]

Idle CPU is what the server (and the Postgres it started) spend with no request coming: its background work
(listeners, log writers, the change feed's reader) and nothing else. Idle wakeups count how often their
threads went to sleep again (voluntary context switches of the threads alive throughout): each timer or poll
that fires with nothing to do is one. The server is given a functions host port of its own, as a lone server
has, so that its Deno host is measured too.

Targets (issue 2): warm restart under 2 s, cold start under 5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from tests.support.servers import ServerProcess, free_port

from kilnbase.server.embedded_postgres import EmbeddedPostgres


def _fresh_dir() -> Path:
    parent = Path(tempfile.mkdtemp(prefix="kbbench-", dir="/tmp"))
    parent.chmod(0o755)  # reachable by the unprivileged Postgres user when run as root
    return parent / "data"


def _postgres_processes(data_dir: Path) -> list[psutil.Process]:
    """The processes of the cluster in `data_dir`: its postmaster and the postmaster's children."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres":
            try:
                postmaster = (
                    proc if str(data_dir / "pgdata") in (proc.info["cmdline"] or []) else proc.parent()
                )
                if postmaster and str(data_dir / "pgdata") in (postmaster.cmdline() or []):
                    found.append(proc)
            except psutil.Error:
                continue
    return found


def _postgres_pss(data_dir: Path) -> int:
    """Proportional set size: shared buffers counted once across the cluster's processes, unlike RSS."""
    total = 0
    for proc in _postgres_processes(data_dir):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_full_info().pss
    return total


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _sleeps(processes: list[psutil.Process]) -> dict[str, int]:
    """Each thread's voluntary context switches so far, by its /proc path."""
    counts = {}
    for proc in processes:
        for status in Path(f"/proc/{proc.pid}/task").glob("*/status"):
            with contextlib.suppress(OSError, StopIteration):
                lines = status.read_text().splitlines()
                count = next(line for line in lines if line.startswith("voluntary_ctxt_switches:"))
                counts[str(status)] = int(count.split()[1])
    return counts


def _wakeups(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(after[thread] - before[thread] for thread in before.keys() & after.keys())


def idle_cpu(server_pid: int, data_dir: Path, seconds: float) -> tuple[float, float, float, float]:
    """CPU milliseconds a second, then wakeups a second, of the server (with any child of its own) and of its
    Postgres, over `seconds` with no request."""
    server = psutil.Process(server_pid)
    servers = [server, *(p for p in server.children(recursive=True) if p.name() != "postgres")]
    postgres = _postgres_processes(data_dir)
    before = _cpu_seconds(servers), _cpu_seconds(postgres), _sleeps(servers), _sleeps(postgres)
    time.sleep(seconds)
    after = _cpu_seconds(servers), _cpu_seconds(postgres), _sleeps(servers), _sleeps(postgres)
    return (
        (after[0] - before[0]) * 1000 / seconds,
        (after[1] - before[1]) * 1000 / seconds,
        _wakeups(before[2], after[2]) / seconds,
        _wakeups(before[3], after[3]) / seconds,
    )


def mcp_answers_after(server: ServerProcess, data_dir: Path, timeout: float = 30) -> float:
    """Seconds from now until `/mcp` lists its tools for the project's API key."""
    api_key = json.loads((data_dir / "keys.json").read_text())["api_key"]
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json, text/event-stream"}
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        answer = httpx.post(
            f"{server.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=headers
        )
        if answer.status_code == 200:
            return time.perf_counter() - started
        time.sleep(0.02)
    raise TimeoutError(f"/mcp did not answer within {timeout} s")


def anchor_postgres_alone(runs: int) -> tuple[list[float], list[float]]:
    cold, warm = [], []
    for _ in range(runs):
        data_dir = _fresh_dir()
        cluster = EmbeddedPostgres(data_dir, secrets.token_hex(16))
        started = time.perf_counter()
        cluster.start()
        cold.append(time.perf_counter() - started)
        cluster.stop()
        started = time.perf_counter()
        cluster.start()
        warm.append(time.perf_counter() - started)
        cluster.stop()
        shutil.rmtree(data_dir.parent, ignore_errors=True)
    return cold, warm


def kilnbase_serve(
    runs: int, idle_seconds: float
) -> tuple[
    list[float], list[float], list[float], list[tuple[int, int]], list[tuple[float, float, float, float]]
]:
    cold, warm, warm_mcp, memory, cpu = [], [], [], [], []
    for _ in range(runs):
        data_dir = _fresh_dir()
        server = ServerProcess(data_dir, env={"KILNBASE_FUNCTIONS_HOST_PORT": str(free_port())})
        cold.append(server.start())
        server.stop()
        warm.append(server.start())
        warm_mcp.append(warm[-1] + mcp_answers_after(server, data_dir))
        time.sleep(1.0)  # idle
        assert server.process is not None
        memory.append((psutil.Process(server.process.pid).memory_full_info().pss, _postgres_pss(data_dir)))
        cpu.append(idle_cpu(server.process.pid, data_dir, idle_seconds))
        server.stop()
        shutil.rmtree(data_dir.parent, ignore_errors=True)
    return cold, warm, warm_mcp, memory, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="how long idle CPU is measured")
    args = parser.parse_args()
    pg_cold, pg_warm = anchor_postgres_alone(args.runs)
    kb_cold, kb_warm, kb_warm_mcp, memory, cpu = kilnbase_serve(args.runs, args.idle_seconds)
    med = statistics.median
    mib = 1024 * 1024
    server_pss = med([m[0] for m in memory]) / mib
    pg_pss = med([m[1] for m in memory]) / mib
    print(f"runs: {args.runs} (medians)")
    print(f"{'':34}{'kilnbase serve':>16}{'Postgres alone':>16}{'ratio':>8}")
    print(
        f"{'cold first start -> healthy (s)':34}{med(kb_cold):16.2f}{med(pg_cold):16.2f}"
        f"{med(kb_cold) / med(pg_cold):8.1f}"
    )
    print(
        f"{'warm restart -> healthy (s)':34}{med(kb_warm):16.2f}{med(pg_warm):16.2f}"
        f"{med(kb_warm) / med(pg_warm):8.1f}"
    )
    print(f"{'warm restart -> /mcp answers (s)':34}{med(kb_warm_mcp):16.2f}")
    print(
        f"idle memory (PSS): server {server_pss:.0f} MiB + Postgres {pg_pss:.0f} MiB"
        f" = {server_pss + pg_pss:.0f} MiB"
    )
    server_cpu, pg_cpu = med([c[0] for c in cpu]), med([c[1] for c in cpu])
    print(
        f"idle CPU: server {server_cpu:.1f} ms/s + Postgres {pg_cpu:.1f} ms/s (over {args.idle_seconds:g} s)"
    )
    server_wakeups, pg_wakeups = med([c[2] for c in cpu]), med([c[3] for c in cpu])
    print(f"idle wakeups: server {server_wakeups:.1f}/s + Postgres {pg_wakeups:.1f}/s")
    print(
        f"targets: warm < 2 s ({'met' if med(kb_warm) < 2 else 'MISSED'}), "
        f"cold < 5 s ({'met' if med(kb_cold) < 5 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
