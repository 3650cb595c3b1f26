"""An agent's session read back from the audit log, and its writes replayed on a second server."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.mcp_server.test_mcp_server import agent_key, call, http_client, table_name
from tests.support.postgres import TestCluster
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def staging(
    cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, str]]:
    server = ServerProcess(
        tmp_path_factory.mktemp("staging") / "data", env={"DATABASE_URL": cluster.create_database("staging")}
    )
    server.start()
    api_key = json.loads((server.data_dir / "keys.json").read_text())["api_key"]
    yield server, api_key
    server.stop()


def kilnbase(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "kilnbase", *args, "--data-dir", str(server.data_dir)]
    return subprocess.run(command, capture_output=True, text=True, env=server.env, timeout=120, check=False)


def tables_on(server: ServerProcess, api_key: str) -> list[str]:
    found: list[str] = httpx.get(
        f"{server.url}/api/database/tables", headers={"Authorization": f"Bearer {api_key}"}
    ).json()
    return found


async def test_a_session_prints_in_order_and_its_writes_replay_elsewhere(
    live_server: ServerProcess, live_keys: dict[str, str], staging: tuple[ServerProcess, str]
) -> None:
    target, target_key = staging
    session = f"test-{uuid.uuid4().hex[:8]}"
    name = table_name()
    async with http_client(live_server, live_keys["apiKey"], session=session) as client:
        await call(
            client,
            "create-table",
            {"tableName": name, "columns": [{"columnName": "title", "type": "string", "isNullable": True}]},
        )
        await call(
            client, "run-raw-sql", {"query": f"insert into {name} (title) values ($1)", "params": ["kept"]}
        )
        await call(client, "list-tables", {})
        failed = await client.call_tool("get-table-schema", {"tableName": "no_such_table_here"})
        assert failed.is_error

    printed = kilnbase(live_server, "audit", "replay", session)
    assert printed.returncode == 0, printed.stderr
    lines = [line for line in printed.stderr.splitlines() if ". " in line and "->" in line]
    assert [line.split()[3] for line in lines] == [
        "create-table",
        "run-raw-sql",
        "list-tables",
        "get-table-schema",
    ]
    assert "[W]" in lines[0] and "[R]" in lines[2] and "failed" in lines[3]

    sessions = kilnbase(live_server, "audit", "sessions")
    assert session in sessions.stderr

    dry = kilnbase(
        live_server, "audit", "replay", session, "--against", target.url, "--key", target_key, "--dry-run"
    )
    assert dry.returncode == 0, dry.stderr
    assert dry.stderr.count("would run") == 2
    assert name not in tables_on(target, target_key)

    replayed = kilnbase(live_server, "audit", "replay", session, "--against", target.url, "--key", target_key)
    assert replayed.returncode == 0, replayed.stderr
    assert name in tables_on(target, target_key)
    async with http_client(target, target_key) as client:
        rows = await call(client, "run-raw-sql", {"query": f"select title from {name}"})
    assert rows["rows"] == [{"title": "kept"}]


def test_an_unknown_session_says_how_to_find_one(live_server: ServerProcess) -> None:
    result = kilnbase(live_server, "audit", "replay", "no-such-session")
    assert result.returncode == 1
    assert "kilnbase audit sessions" in result.stderr


async def test_replay_against_needs_a_key(live_server: ServerProcess, live_keys: dict[str, str]) -> None:
    session = f"test-{uuid.uuid4().hex[:8]}"
    async with http_client(live_server, live_keys["apiKey"], session=session) as client:
        await call(client, "list-tables", {})
    result = kilnbase(live_server, "audit", "replay", session, "--against", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "--against needs --key" in result.stderr


async def test_a_session_two_credentials_named_replays_one_credential_at_a_time(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    """A client names its session (`X-Agent-Session`), so another credential can name the same one: its
    writes must not ride along when a person replays the session with their own key elsewhere."""
    session = f"test-{uuid.uuid4().hex[:8]}"
    columns = [{"columnName": "title", "type": "string", "isNullable": True}]
    mine, theirs = table_name(), table_name()
    async with http_client(live_server, live_keys["apiKey"], session=session) as client:
        await call(client, "create-table", {"tableName": mine, "columns": columns})
    intruder = agent_key(live_server, live_keys["apiKey"], ["database:write"])
    async with http_client(live_server, intruder, session=session) as client:
        await call(client, "create-table", {"tableName": theirs, "columns": columns})

    printed = kilnbase(live_server, "audit", "replay", session)
    assert printed.returncode == 0, printed.stderr
    assert "api-key" in printed.stderr and "agent:mcp-" in printed.stderr  # who made each call

    target = ("--against", "http://127.0.0.1:9", "--key", "ik_elsewhere", "--dry-run")
    mixed = kilnbase(live_server, "audit", "replay", session, *target)
    assert mixed.returncode == 1
    assert "--actor" in mixed.stderr and "agent:mcp-" in mixed.stderr
    assert "would run" not in mixed.stderr

    one = kilnbase(live_server, "audit", "replay", session, *target, "--actor", "api-key")
    assert one.returncode == 0, one.stderr
    would_run = [line for line in one.stderr.splitlines() if "would run" in line]
    assert would_run == ["  create-table: would run"]
