"""Auth throughput: password sign-ins and token refreshes per second at a fixed concurrency, against a real
`kilnbase serve` process, with `GET /api/health` on the same server and client as the anchor, plus the cost of
one password hash with the configured argon2id parameters (anchored on bcrypt cost 10, what InsForge uses).

    .venv/bin/python -m bench.auth [--concurrency 16] [--seconds 5] [--argon2 owasp|default]

PocketBase's published figure (about 3,200 refreshes/s on 2 vCPU) is printed for orientation only; it was not
measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import bcrypt
import httpx
from tests.support.postgres import TestCluster
from tests.support.servers import ServerProcess

from kilnbase.auth.passwords import Passwords
from kilnbase.config import AuthSettings

PROFILES = {
    "owasp": {"argon2_time_cost": 2, "argon2_memory_cost_kib": 19456, "argon2_parallelism": 1},
    "default": {},
}
POCKETBASE_REFRESHES_PER_SECOND = 3200


async def _load(
    concurrency: int, seconds: float, make_worker: Callable[[int], Awaitable[Callable[[], Awaitable[None]]]]
) -> float:
    """Requests per second completed by `concurrency` workers looping for `seconds`."""
    steps = [await make_worker(i) for i in range(concurrency)]
    done = 0
    deadline = time.perf_counter() + seconds

    async def run(step: Callable[[], Awaitable[None]]) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await step()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(run(step) for step in steps))
    return done / (time.perf_counter() - started)


async def measure(url: str, concurrency: int, seconds: float) -> dict[str, float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        password = "bench password 1"  # noqa: S105 (a throwaway account's password)
        emails = [f"bench-{secrets.token_hex(6)}@example.com" for _ in range(concurrency)]
        refresh_tokens: dict[int, str] = {}
        for i, email in enumerate(emails):
            response = await http.post(
                "/api/auth/users?client_type=mobile", json={"email": email, "password": password}
            )
            response.raise_for_status()
            refresh_tokens[i] = response.json()["refreshToken"]

        async def health_worker(_i: int) -> Callable[[], Awaitable[None]]:
            async def step() -> None:
                (await http.get("/api/health")).raise_for_status()

            return step

        async def refresh_worker(i: int) -> Callable[[], Awaitable[None]]:
            async def step() -> None:
                response = await http.post(
                    "/api/auth/refresh?client_type=mobile", json={"refreshToken": refresh_tokens[i]}
                )
                response.raise_for_status()
                refresh_tokens[i] = response.json()["refreshToken"]

            return step

        async def sign_in_worker(i: int) -> Callable[[], Awaitable[None]]:
            async def step() -> None:
                body = {"email": emails[i], "password": password}
                (await http.post("/api/auth/sessions?client_type=mobile", json=body)).raise_for_status()

            return step

        await _load(concurrency, 1.0, health_worker)  # warm-up
        return {
            "health": await _load(concurrency, seconds, health_worker),
            "refresh": await _load(concurrency, seconds, refresh_worker),
            "sign_in": await _load(concurrency, seconds, sign_in_worker),
        }


def hash_costs(profile: dict[str, int]) -> tuple[float, float]:
    passwords = Passwords(AuthSettings(**profile))  # type: ignore[arg-type]
    argon = []
    for _ in range(5):
        started = time.perf_counter()
        passwords.hash_sync("bench password 1")
        argon.append(time.perf_counter() - started)
    bcrypt_times = []
    for _ in range(5):
        started = time.perf_counter()
        bcrypt.hashpw(b"bench password 1", bcrypt.gensalt(rounds=10))
        bcrypt_times.append(time.perf_counter() - started)
    return statistics.median(argon), statistics.median(bcrypt_times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--argon2", choices=sorted(PROFILES), default="owasp")
    args = parser.parse_args()
    profile = PROFILES[args.argon2]
    env = {f"KILNBASE_AUTH_{k.upper()}": str(v) for k, v in profile.items()}
    env.update({"KILNBASE_AUTH_SIGN_IN_LIMIT": "100000000", "LOG_LEVEL": "warning"})
    cluster = TestCluster()
    try:
        env["DATABASE_URL"] = cluster.create_database("bench")
        with tempfile.TemporaryDirectory() as tmp:
            server = ServerProcess(Path(tmp) / "data", env=env)
            server.start(timeout=120)
            try:
                rates = asyncio.run(measure(server.url, args.concurrency, args.seconds))
            finally:
                server.stop()
    finally:
        cluster.close()
    argon_seconds, bcrypt_seconds = hash_costs(profile)
    report = {
        "concurrency": args.concurrency,
        "argon2_profile": args.argon2,
        "health_per_second": round(rates["health"]),
        "refresh_per_second": round(rates["refresh"]),
        "sign_in_per_second": round(rates["sign_in"]),
        "refresh_vs_health": round(rates["refresh"] / rates["health"], 3),
        "sign_in_vs_health": round(rates["sign_in"] / rates["health"], 3),
        "refresh_vs_pocketbase_published": round(rates["refresh"] / POCKETBASE_REFRESHES_PER_SECOND, 3),
        "argon2_hash_ms": round(argon_seconds * 1000, 1),
        "bcrypt10_hash_ms": round(bcrypt_seconds * 1000, 1),
        "argon2_vs_bcrypt10": round(argon_seconds / bcrypt_seconds, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
