"""Functions tests: the app over a fresh database with the real Deno binary, one worker per function and a
short time limit, so the runtime's limits show quickly. Each test deploys functions under slugs of its own."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from kilnbase.config import FunctionsSettings, Settings
from kilnbase.functions.sandbox import deno_binary
from tests.support.app import admin_headers, services_of
from tests.support.servers import free_port

#: Function code that tries what the runtime refuses; a function's answer is `walls(...)` of the attempts.
WALLS = """
async function attempt(f: () => Promise<unknown>) {
  try { await f(); return "allowed"; } catch (e) { return e.name; }
}
const walls = async (extra: Record<string, () => Promise<unknown>> = {}) => {
  const tries: Record<string, () => Promise<unknown>> = {
    read: () => Deno.readTextFile("/etc/passwd"),
    write: () => Deno.writeTextFile("/tmp/x", "x"),
    run: () => new Deno.Command("/usr/bin/true").output(),
    ffi: async () => Deno.dlopen("libc.so.6", {}),
    ...extra,
  };
  const out: Record<string, string> = {};
  for (const [name, f] of Object.entries(tries)) out[name] = await attempt(f);
  return Response.json(out);
};
"""
REFUSED = {"read": "NotCapable", "write": "NotCapable", "run": "NotCapable", "ffi": "NotCapable"}

#: Deploys code and returns its slug: `deploy(code, secrets=[...])`.
Deploy = Callable[..., str]


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        functions=FunctionsSettings(timeout_ms=3000, workers_per_function=1, memory_mb=64, max_concurrency=4),
    )


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


def new_slug(prefix: str = "fn") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture
def deploy(client: TestClient, admin: dict[str, str]) -> Deploy:
    def make(code: str, **fields: Any) -> str:
        slug = fields.pop("slug", None) or new_slug()
        response = client.post(
            "/api/functions", json={"name": slug, "slug": slug, "code": code, **fields}, headers=admin
        )
        assert response.status_code == 201, response.text
        return slug

    return make


def deno_starts_with(deny_net: tuple[str, ...], directory: Path) -> None:
    """Deno starts with this `--deny-net` list: it refuses to start on an entry it cannot read, and every
    function would fail."""
    script = directory / "ok.js"
    script.write_text('console.log("started");')
    started = subprocess.run(
        [
            deno_binary(),
            "run",
            "--no-prompt",
            "--no-config",
            "--allow-net",
            f"--deny-net={','.join(deny_net)}",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.stdout.strip() == "started", started.stderr


def function_logs(client: TestClient, slug: str) -> list[dict[str, Any]]:
    """The rows of `functions.logs` for a function, oldest first (written in batches: flushed here)."""
    runtime = services_of(client).functions.runtime
    portal = client.portal
    assert portal is not None
    portal.call(runtime.logs.flush)
    response = client.post(
        "/api/database/advance/rawsql/unrestricted",
        json={
            "query": "select request_id, level, message, status, duration_ms from functions.logs "
            "where slug = $1 order by id",
            "params": [slug],
        },
        headers=admin_headers(client),
    )
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["rows"]
    return rows


# --- the functions host (for modules whose settings give it `host_port`) ----------------------------------


@pytest.fixture(scope="module")
def host_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def host(client: TestClient, host_port: int) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{host_port}", timeout=10) as http:
        deadline = time.monotonic() + 30
        while True:
            try:
                if http.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the functions host did not start"
            time.sleep(0.05)
        yield http
