"""Settings a server cannot start with, as an operator meets them: a variable that takes JSON holding
something else, a statement timeout Postgres does not take, an unknown log level, a pool whose least size
passes its greatest, a Redis URL of another scheme, a public URL that is not one, a port out of range, an
address this machine does not have. `kilnbase serve` names the setting and what it takes, before it starts
anything, with no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import reachable_scratch
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]

#: A variable set wrong, and what the error says about it.
WRONG = {
    "KILNBASE_AUTH": ("{not json", "KILNBASE_AUTH: is not valid JSON"),
    "KILNBASE_AUTH_OAUTH_ENDPOINTS": ("{'google':", "KILNBASE_AUTH_OAUTH_ENDPOINTS: is not valid JSON"),
    "KILNBASE_DB_ANON_STATEMENT_TIMEOUT": (
        "three seconds",
        "KILNBASE_DB_ANON_STATEMENT_TIMEOUT: must be a duration such as 3s",
    ),
    "KILNBASE_LOG_LEVEL": ("verbose", "KILNBASE_LOG_LEVEL: must be one of debug, info, warning"),
    "KILNBASE_DB_POOL_MIN": ("40", "KILNBASE_DB_POOL_MIN must be at most KILNBASE_DB_POOL_MAX"),
    "KILNBASE_DB_OWNER_POOL_MIN": (
        "9",
        "KILNBASE_DB_OWNER_POOL_MIN must be at most KILNBASE_DB_OWNER_POOL_MAX",
    ),
    "KILNBASE_RATE_LIMIT_REDIS_URL": (
        "cache.internal:6379",
        "KILNBASE_RATE_LIMIT_REDIS_URL: must start with redis://",
    ),
    "KILNBASE_REALTIME_REDIS_URL": (
        "http://cache:6379",
        "KILNBASE_REALTIME_REDIS_URL: must start with redis://",
    ),
    # Every link the server hands out (emails, OAuth redirects, storage URLs) starts with it.
    "KILNBASE_PUBLIC_URL": (
        "backend.shop.internal",
        "KILNBASE_PUBLIC_URL: must be an absolute http(s) URL with a host, such as https://",
    ),
    "API_BASE_URL": (
        "https://deploy:hunter2@api.example.com",
        "API_BASE_URL: must hold no user name, password, query or fragment",
    ),
}


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with reachable_scratch("kbsettings-") as parent:
        yield parent / "project"


def serve(
    data_dir: Path, *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KILNBASE_", "DATABASE_URL", "PORT"))}
    clean |= {"KILNBASE_FUNCTIONS_HOST_PORT": "0", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "kilnbase", "serve", "--data-dir", str(data_dir), *options],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=clean | (env or {}),
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("variable", WRONG)
def test_a_setting_set_wrong(data_dir: Path, variable: str) -> None:
    value, said = WRONG[variable]
    result = serve(data_dir, "--port", str(free_port()), env={variable: value})
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("Error: The settings are not valid:"), result.stderr
    assert said in result.stderr and "Set them right in the environment" in result.stderr, result.stderr
    assert value not in result.stderr  # (a value may be a secret: the setting is named, never echoed)
    assert not (data_dir / "pgdata").exists(), "the database was started before the settings were checked"


@pytest.mark.parametrize("port", ["0", "70000"])
def test_a_port_out_of_range_is_the_options(data_dir: Path, port: str) -> None:
    """Said of `--port`, which the user typed, not of an environment variable they never set."""
    result = serve(data_dir, "--port", port)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Invalid value for '--port'" in result.stderr, result.stderr
    assert "KILNBASE_PORT" not in result.stderr and "environment" not in result.stderr


@pytest.mark.parametrize("host", ["192.0.2.1", "no-such-host.invalid"])
def test_a_host_this_machine_does_not_have(data_dir: Path, host: str) -> None:
    """An address that is not this machine's (TEST-NET-1) or a name that does not resolve: the host is what
    to change, not the port."""
    result = serve(data_dir, "--host", host, "--port", str(free_port()))
    assert result.returncode == 1, (result.returncode, result.stderr)
    [said] = result.stderr.strip().splitlines()
    assert said.startswith(f"Error: Cannot listen on {host}:"), said
    assert "Pass --host" in said and "0.0.0.0" in said and "--port" not in said, said
