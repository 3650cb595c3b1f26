"""Auth throughput: token refreshes and password sign-ins per second at a fixed concurrency, against a real
`kilnbase serve` process, with `GET /api/health` on the same server, client and run as the ceiling, plus the
cost of one password hash with the configured argon2id parameters (anchored on bcrypt cost 10, what InsForge
uses). The health endpoint is run twice: with no credential, and with a user's access token, which the
server verifies (from its cache) and checks against the sessions ended lately: the difference is what
checking a user's credential costs on every request.

Load comes from wrk (one thread, so the client takes as little of the machine as it can) when it is
installed, else from an asyncio client (`--client python`), which on a 2-core machine competes with the
server for the same cores and reports a lower figure. Each refresh uses the token the previous refresh of that
connection returned (a Lua queue in wrk), as a real client does. Beside each rate, the CPU time per request
(user + system) of the server's processes, of Postgres's, and of the load generator's: on a shared machine
the steadier figures, and together they say where a request's time goes.

    .venv/bin/python -m bench.auth [--concurrency 16] [--seconds 5] [--workers 1] [--client wrk|python]
                                   [--argon2 owasp|default] [--profile]

`--profile` adds one more refresh run, sampled with py-spy (`bench/cpu_parts.py`), and reports where the
server's CPU went, by part (signing, HMACs, the driver, the HTTP server's Python side, Kilnbase's code...).

PocketBase's published figure (about 3,200 refreshes/s on 2 vCPU) is printed for orientation only; it was not
measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx
import psutil
from tests.support.postgres import TestCluster
from tests.support.servers import ServerProcess

from bench import cpu_parts
from kilnbase.auth.passwords import Passwords
from kilnbase.config import AuthSettings

PROFILES = {
    "owasp": {"argon2_time_cost": 2, "argon2_memory_cost_kib": 19456, "argon2_parallelism": 1},
    "default": {},
}
POCKETBASE_REFRESHES_PER_SECOND = 3200
PASSWORD = "bench password 1"  # noqa: S105 (a throwaway account's password)
REFRESH = "/api/auth/refresh?client_type=mobile"
SIGN_IN = "/api/auth/sessions?client_type=mobile"


@dataclass(frozen=True)
class Rate:
    per_second: float
    #: CPU (user + system) per request, in microseconds: the server's processes, Postgres's, the client's.
    cpu_us: int
    postgres_cpu_us: int
    client_cpu_us: int


@dataclass(frozen=True)
class Processes:
    server: int
    postgres: int


def cpu_seconds(pid: int) -> float:
    process = psutil.Process(pid)
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


# --- wrk ---------------------------------------------------------------------------------------------------

_DONE = """
done = function(summary, latency, requests)
  io.write(string.format("KB %d %d %d\\n", summary.requests, summary.errors.status, summary.duration))
end
"""

#: Each connection has one request in flight, so a queue of more tokens than connections never runs dry: a
#: request takes the oldest token, its response puts the rotated one back. (wrk calls `request` once more
#: before the run, to check the request it builds: that one is never sent, and spends a token.)
_REFRESH_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local queue = {%(tokens)s}
local head, tail = 1, #queue
function request()
  local token = queue[head] or "spent"
  queue[head] = nil
  head = head + 1
  return wrk.format(nil, nil, nil, '{"refreshToken":"' .. token .. '"}')
end
function response(status, headers, body)
  local token = string.match(body, '"refreshToken":"([^"]+)"')
  if token then
    tail = tail + 1
    queue[tail] = token
  end
end
"""

_POST_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '%(body)s'
"""


def wrk(url: str, script: str, concurrency: int, seconds: float, workdir: Path) -> tuple[int, float]:
    """(requests, seconds) of one wrk run; raises if any answer was not 2xx/3xx. Its CPU time shows in
    `resource.RUSAGE_CHILDREN` once it exits."""
    path = workdir / f"load-{secrets.token_hex(4)}.lua"
    path.write_text(script + _DONE)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "-s", str(path), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("KB "))
    requests, bad_status, duration_us = (int(x) for x in line.split()[1:])
    if bad_status:
        raise RuntimeError(f"{bad_status} of {requests} answers from {url} were errors")
    return requests, duration_us / 1e6


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk_rate(
    processes: Processes, url: str, script: str, concurrency: int, seconds: float, workdir: Path
) -> Rate:
    before = (cpu_seconds(processes.server), cpu_seconds(processes.postgres), children_cpu_seconds())
    requests, elapsed = wrk(url, script, concurrency, seconds, workdir)
    after = (cpu_seconds(processes.server), cpu_seconds(processes.postgres), children_cpu_seconds())
    server, postgres, client = (
        round((b - a) / max(requests, 1) * 1e6) for a, b in zip(before, after, strict=True)
    )
    return Rate(requests / elapsed, server, postgres, client)


def refresh_script(accounts: Accounts) -> str:
    return _REFRESH_SCRIPT % {"tokens": ", ".join(f'"{t}"' for t in accounts.refresh_tokens)}


def measure_wrk(
    url: str, processes: Processes, accounts: Accounts, concurrency: int, seconds: float
) -> dict[str, Rate]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        body = json.dumps({"email": accounts.email, "password": PASSWORD})
        as_user = f'wrk.headers["Authorization"] = "Bearer {accounts.access_token}"'
        wrk(url + "/api/health", "", concurrency, 1, workdir)  # warm-up
        health = url + "/api/health"
        return {
            "health": wrk_rate(processes, health, "", concurrency, seconds, workdir),
            "health_as_user": wrk_rate(processes, health, as_user, concurrency, seconds, workdir),
            "refresh": wrk_rate(
                processes, url + REFRESH, refresh_script(accounts), concurrency, seconds, workdir
            ),
            "sign_in": wrk_rate(
                processes, url + SIGN_IN, _POST_SCRIPT % {"body": body}, concurrency, seconds, workdir
            ),
        }


def profile_refresh(url: str, processes: Processes, concurrency: int, seconds: float) -> dict[str, object]:
    """One more refresh run, sampled by py-spy (`bench/cpu_parts.py`): where the server's CPU goes. Apart
    from the measured runs, because the sampler takes CPU of its own on the same cores. Fresh accounts:
    the measured run spent the first ones' tokens."""
    accounts = sign_up_users(url, concurrency + 4)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        recording = workdir / "refresh.txt"
        spy = cpu_parts.start(processes.server, seconds, recording)
        try:
            rate = wrk_rate(processes, url + REFRESH, refresh_script(accounts), concurrency, seconds, workdir)
        finally:
            spy.wait(timeout=seconds + 30)
        parts = cpu_parts.read(recording)
    return {
        "refresh_per_second_while_sampled": round(rate.per_second),
        "server_cpu_us_per_refresh_while_sampled": rate.cpu_us,
        "samples_without_python_frames": parts.native_share,
        "parts_of_python_samples": parts.shares,
    }


# --- the asyncio client ------------------------------------------------------------------------------------


async def _load(
    processes: Processes,
    concurrency: int,
    seconds: float,
    make_worker: Callable[[int], Awaitable[Callable[[], Awaitable[None]]]],
) -> Rate:
    """Requests per second completed by `concurrency` workers looping for `seconds`."""
    steps = [await make_worker(i) for i in range(concurrency)]
    done = 0
    deadline = time.perf_counter() + seconds

    async def run(step: Callable[[], Awaitable[None]]) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await step()
            done += 1

    before = (cpu_seconds(processes.server), cpu_seconds(processes.postgres), time.process_time())
    started = time.perf_counter()
    await asyncio.gather(*(run(step) for step in steps))
    rate = done / (time.perf_counter() - started)
    after = (cpu_seconds(processes.server), cpu_seconds(processes.postgres), time.process_time())
    server, postgres, client = (
        round((b - a) / max(done, 1) * 1e6) for a, b in zip(before, after, strict=True)
    )
    return Rate(rate, server, postgres, client)


async def measure_python(
    url: str, processes: Processes, accounts: Accounts, concurrency: int, seconds: float
) -> dict[str, Rate]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    refresh_tokens = dict(enumerate(accounts.refresh_tokens))
    email = accounts.email
    as_user = {"Authorization": f"Bearer {accounts.access_token}"}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:

        async def health_worker(_i: int) -> Callable[[], Awaitable[None]]:
            async def step() -> None:
                (await http.get("/api/health")).raise_for_status()

            return step

        async def health_as_user_worker(_i: int) -> Callable[[], Awaitable[None]]:
            async def step() -> None:
                (await http.get("/api/health", headers=as_user)).raise_for_status()

            return step

        async def refresh_worker(i: int) -> Callable[[], Awaitable[None]]:
            async def step() -> None:
                response = await http.post(REFRESH, json={"refreshToken": refresh_tokens[i]})
                response.raise_for_status()
                refresh_tokens[i] = response.json()["refreshToken"]

            return step

        async def sign_in_worker(_i: int) -> Callable[[], Awaitable[None]]:
            async def step() -> None:
                body = {"email": email, "password": PASSWORD}
                (await http.post(SIGN_IN, json=body)).raise_for_status()

            return step

        await _load(processes, concurrency, 1.0, health_worker)  # warm-up
        return {
            "health": await _load(processes, concurrency, seconds, health_worker),
            "health_as_user": await _load(processes, concurrency, seconds, health_as_user_worker),
            "refresh": await _load(processes, concurrency, seconds, refresh_worker),
            "sign_in": await _load(processes, concurrency, seconds, sign_in_worker),
        }


# --- the run -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accounts:
    refresh_tokens: list[str]
    #: The first account's email (for sign-ins) and access token (for requests as a user).
    email: str
    access_token: str


def sign_up_users(url: str, count: int) -> Accounts:
    emails = [f"bench-{secrets.token_hex(6)}@example.com" for _ in range(count)]
    sessions = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for email in emails:
            response = http.post(
                "/api/auth/users?client_type=mobile", json={"email": email, "password": PASSWORD}
            )
            response.raise_for_status()
            sessions.append(response.json())
    return Accounts([s["refreshToken"] for s in sessions], emails[0], sessions[0]["accessToken"])


def hash_costs(profile: dict[str, int]) -> tuple[float, float]:
    passwords = Passwords(AuthSettings(**profile))  # type: ignore[arg-type]
    argon = []
    for _ in range(5):
        started = time.perf_counter()
        passwords.hash_sync(PASSWORD)
        argon.append(time.perf_counter() - started)
    bcrypt_times = []
    for _ in range(5):
        started = time.perf_counter()
        bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10))
        bcrypt_times.append(time.perf_counter() - started)
    return statistics.median(argon), statistics.median(bcrypt_times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=1, help="API processes (`kilnbase serve --workers`)")
    parser.add_argument(
        "--client", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python"
    )
    parser.add_argument("--argon2", choices=sorted(PROFILES), default="owasp")
    parser.add_argument(
        "--profile", action="store_true", help="one more refresh run, sampled: where the CPU goes (py-spy)"
    )
    args = parser.parse_args()
    if args.profile and args.client != "wrk":
        parser.error("--profile needs wrk (apt-get install wrk)")
    profile = PROFILES[args.argon2]
    env = {f"KILNBASE_AUTH_{k.upper()}": str(v) for k, v in profile.items()}
    env.update(
        {
            "KILNBASE_AUTH_SIGN_IN_LIMIT": "100000000",
            "KILNBASE_AUTH_SIGN_IN_IP_LIMIT": "100000000",
            "KILNBASE_AUTH_SIGN_UP_LIMIT": "100000000",
            "LOG_LEVEL": "warning",
        }
    )
    refresh_profile: dict[str, object] | None = None
    cluster = TestCluster()
    try:
        env["DATABASE_URL"] = cluster.create_database("bench")
        with tempfile.TemporaryDirectory() as tmp:
            server = ServerProcess(Path(tmp) / "data", env=env, args=["--workers", str(args.workers)])
            server.start(timeout=120)
            try:
                postmaster = cluster.server.postmaster_pid()
                assert server.process is not None and postmaster is not None
                processes = Processes(server.process.pid, postmaster)
                accounts = sign_up_users(server.url, args.concurrency + 4)
                if args.client == "wrk":
                    rates = measure_wrk(server.url, processes, accounts, args.concurrency, args.seconds)
                    if args.profile:
                        refresh_profile = profile_refresh(
                            server.url, processes, args.concurrency, args.seconds
                        )
                else:
                    rates = asyncio.run(
                        measure_python(server.url, processes, accounts, args.concurrency, args.seconds)
                    )
            finally:
                server.stop()
    finally:
        cluster.close()
    argon_seconds, bcrypt_seconds = hash_costs(profile)
    health, refresh, sign_in = rates["health"], rates["refresh"], rates["sign_in"]
    report = {
        "client": args.client,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "argon2_profile": args.argon2,
        "health_per_second": round(health.per_second),
        "health_as_user_per_second": round(rates["health_as_user"].per_second),
        "refresh_per_second": round(refresh.per_second),
        "sign_in_per_second": round(sign_in.per_second),
        "refresh_vs_health": round(refresh.per_second / health.per_second, 3),
        "sign_in_vs_health": round(sign_in.per_second / health.per_second, 3),
        "cpu_us_per_request": {
            name: {"server": rate.cpu_us, "postgres": rate.postgres_cpu_us, "client": rate.client_cpu_us}
            for name, rate in rates.items()
        },
        "refresh_vs_pocketbase_published": round(refresh.per_second / POCKETBASE_REFRESHES_PER_SECOND, 3),
        "argon2_hash_ms": round(argon_seconds * 1000, 1),
        "bcrypt10_hash_ms": round(bcrypt_seconds * 1000, 1),
        "argon2_vs_bcrypt10": round(argon_seconds / bcrypt_seconds, 2),
    }
    if refresh_profile is not None:
        report["refresh_cpu_parts"] = refresh_profile
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
