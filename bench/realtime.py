"""Realtime: one message fanned out to many subscribers (p50/p99 delivery latency), sustained messages per
second, and change events per second from a table under insert load; Kilnbase in one process and across two
(over the machine's Redis), side by side in one run with a Node socket.io server doing the same broadcast.

The load comes from Node (`bench/realtime_node/clients.mjs`, socket.io-client, one process) for both servers,
so the client side is the same. The anchor is socket.io's own broadcast, with no database in between; the
Kilnbase figures include what InsForge's realtime does too: each publish is stored in `realtime.messages` as
the caller (RLS), and delivered from `NOTIFY` after commit. Latency is from the publisher's send to each
subscriber's receipt, all on this machine's clock. Beside it, the servers' CPU time per delivery (user and
system, read from /proc by the client around the measured phase; Postgres's is not counted), the steadier
figure when other work shares the machine. Each timed phase starts once the servers' CPU has been quiet for
half a second: a subscriber's join is announced to the whole room (InsForge's presence), and with Redis those
announcements are still being delivered well after the last join was acknowledged, which would otherwise be
timed as fan-out.

    .venv/bin/python -m bench.realtime [--subscribers 1000] [--rounds 20] [--messages 2000]
                                       [--throughput-subscribers 100] [--changes 5000]

Targets (issue 14): p99 under 50 ms for the 1,000-subscriber fan-out; at least half of Node socket.io's
messages per second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import socketio  # type: ignore[import-untyped]
from tests.support.postgres import TestCluster
from tests.support.servers import ServerProcess, free_port

NODE_DIR = Path(__file__).resolve().parent / "realtime_node"
CHANNEL = "bench:fanout"
REDIS_URL = "redis://127.0.0.1:6379/0"
#: Kilnbase's per-connection limits, lifted for the publisher (the load is the point here).
UNLIMITED = {
    "KILNBASE_REALTIME_EVENTS_PER_SECOND": "1000000",
    "KILNBASE_REALTIME_EVENT_BURST": "1000000",
}


def ensure_node_modules() -> None:
    if shutil.which("node") is None:
        raise SystemExit("bench/realtime needs Node.js 20 and npm")
    if not (NODE_DIR / "node_modules" / "socket.io").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True)


def run_clients(config: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run(
        ["node", str(NODE_DIR / "clients.mjs"), json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"clients failed:\n{result.stdout}\n{result.stderr}")
    output: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return output


@contextmanager
def node_server() -> Iterator[tuple[str, int]]:
    port = free_port()
    process = subprocess.Popen(
        ["node", str(NODE_DIR / "server.mjs"), str(port)], stdout=subprocess.PIPE, text=True, cwd=NODE_DIR
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()  # "listening"
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def kilnbase_servers(
    cluster: TestCluster, processes: int
) -> Iterator[tuple[list[str], list[int], dict[str, str], str]]:
    """`processes` servers of one project over one database (sharing one data directory's keys), with Redis
    when there are several; yields their URLs, their process ids, the project's keys and the database URL."""
    database_url = cluster.create_database("benchrt")
    env = {"DATABASE_URL": database_url, "KILNBASE_LOG_LEVEL": "warning", **UNLIMITED}
    if processes > 1:
        env["REDIS_URL"] = REDIS_URL
    with tempfile.TemporaryDirectory() as tmp:
        servers = [ServerProcess(Path(tmp) / "data", env=env) for _ in range(processes)]
        try:
            for server in servers:
                server.start()
            stored = json.loads((servers[0].data_dir / "keys.json").read_text())
            keys = {"apiKey": stored["api_key"], "anonKey": stored["anon_key"]}
            admin = {"Authorization": f"Bearer {keys['apiKey']}"}
            with httpx.Client(base_url=servers[0].url, headers=admin, timeout=30) as http:
                http.post("/api/realtime/channels", json={"pattern": "bench:%"}).raise_for_status()
                policies = (
                    "create policy bench_subscribe on realtime.channels for select to anon using (true); "
                    "create table bench_rows (id bigint generated always as identity primary key, n int); "
                    "create policy bench_rows_read on bench_rows for select to anon using (true)"
                )
                http.post("/api/database/advance/rawsql", json={"query": policies}).raise_for_status()
            pids = [server.process.pid for server in servers if server.process is not None]
            yield [server.url for server in servers], pids, keys, database_url
        finally:
            for server in servers:
                server.stop()


def broadcast(
    urls: list[str],
    pids: list[int],
    subscriber_auth: dict[str, str],
    publisher_auth: dict[str, str],
    args: Any,
) -> dict[str, Any]:
    base = {
        "urls": urls,
        "serverPids": pids,
        "channel": CHANNEL,
        "subscriberAuth": subscriber_auth,
        "publisherAuth": publisher_auth,
    }
    fanout = run_clients({**base, "mode": "fanout", "subscribers": args.subscribers, "rounds": args.rounds})
    settle(urls)
    throughput = run_clients(
        {**base, "mode": "throughput", "subscribers": args.throughput_subscribers, "messages": args.messages}
    )
    return {"fanout": fanout, "throughput": throughput}


def settle(urls: list[str]) -> None:
    """Wait until every server answers at once again (a thousand subscribers leaving is a million presence
    events to send, with InsForge's presence), so one phase's tail does not time the next."""
    for url in urls:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            started = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{url}/api/health", timeout=30)
            if time.perf_counter() - started < 0.05:
                break
            time.sleep(0.5)


async def change_events(urls: list[str], anon_key: str, database_url: str, count: int) -> float:
    """Rows inserted (in transactions of 100) per second, as change events received by one subscriber on
    each process."""
    clients = []
    received = [0] * len(urls)
    done = asyncio.Event()
    for index, url in enumerate(urls):
        client = socketio.AsyncClient(reconnection=False)

        def on_change(_data: Any, index: int = index) -> None:
            received[index] += 1
            if all(n >= count for n in received):
                done.set()

        client.on("postgres_changes", on_change)
        await client.connect(url, auth={"token": anon_key}, transports=["websocket"])
        ack = await client.call("realtime:subscribe", {"channel": "postgres_changes:public:bench_rows"})
        assert ack["ok"], ack
        clients.append(client)
    started = time.perf_counter()
    with psycopg.connect(database_url) as conn:
        for start in range(0, count, 100):
            conn.execute(
                "insert into bench_rows (n) select generate_series(%s::int, %s::int)", (start, start + 99)
            )
            conn.commit()
    await asyncio.wait_for(done.wait(), timeout=300)
    elapsed = time.perf_counter() - started
    for client in clients:
        await client.disconnect()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--throughput-subscribers", type=int, default=100)
    parser.add_argument("--changes", type=int, default=5000)
    args = parser.parse_args()
    ensure_node_modules()
    results: dict[str, dict[str, Any]] = {}
    with node_server() as (url, pid):
        results["node socket.io (1 process)"] = broadcast([url], [pid], {"token": "x"}, {"token": "x"}, args)
    cluster = TestCluster()
    try:
        for processes in (1, 2):
            with kilnbase_servers(cluster, processes) as (urls, pids, keys, database_url):
                label = f"kilnbase ({processes} process{'es' if processes > 1 else ''})"
                subscriber, publisher = {"token": keys["anonKey"]}, {"apiKey": keys["apiKey"]}
                results[label] = broadcast(urls, pids, subscriber, publisher, args)
                events = asyncio.run(change_events(urls, keys["anonKey"], database_url, args.changes))
                results[label]["changeEventsPerSecond"] = events
    finally:
        cluster.close()
    results_dir = Path(__file__).resolve().parent / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / "realtime.json").write_text(json.dumps(results, indent=1))
    header = (
        "server",
        "fan-out p50 ms",
        "p99 ms",
        "CPU µs/dlv",
        "messages/s",
        "deliveries/s",
        "CPU µs/dlv",
        "changes/s",
    )
    line = "{:<26} {:>14} {:>8} {:>10} {:>11} {:>13} {:>10} {:>10}"
    print(line.format(*header))
    for label, result in results.items():
        fanout, throughput = result["fanout"], result["throughput"]
        changes = result.get("changeEventsPerSecond")
        row = (
            label,
            f"{fanout['p50']:.1f}",
            f"{fanout['p99']:.1f}",
            f"{fanout['serverCpuMicrosPerDelivery']:.1f}",
            f"{throughput['messagesPerSecond']:.0f}",
            f"{throughput['deliveriesPerSecond']:.0f}",
            f"{throughput['serverCpuMicrosPerDelivery']:.1f}",
            "-" if changes is None else f"{changes:.0f}",
        )
        print(line.format(*row))
    print(
        f"\n{args.subscribers} subscribers for the fan-out ({args.rounds} rounds), "
        f"{args.throughput_subscribers} for {args.messages} back-to-back messages, "
        f"{args.changes} inserted rows for change events; CPU count {os.cpu_count()}."
    )


if __name__ == "__main__":
    main()
