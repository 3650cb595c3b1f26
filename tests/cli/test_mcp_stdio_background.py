"""`kilnbase mcp` over stdio is a tool process: it offers the tools, and leaves the background work (the
schedules runner, sweeps) to the server. A schedule that is due every second is not called while only the
editor's MCP process runs; the server calls it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import Settings
from tests.support.http_target import HttpTarget
from tests.support.stdio_mcp import initialize, stdio_mcp


@pytest.fixture(scope="module")
def target() -> Iterator[HttpTarget]:
    with HttpTarget() as server:
        yield server


def test_the_stdio_mcp_process_makes_no_scheduled_calls(
    database_url: str, tmp_path: Path, target: HttpTarget
) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "insert into schedules.jobs (name, cron_schedule, function_url, http_method, cron_job_id, "
            "next_run_at) values ('every second', '1 second', %s, 'GET', 1, now())",
            (target.url + "/ok/stdio",),
        )
    with stdio_mcp(database_url, tmp_path / "data") as process:
        assert process.stdin is not None and process.stderr is not None
        initialize(process, "editor")
        time.sleep(2.5)  # (a runner would have called the due job twice by now)
        assert target.to("/ok/stdio") == []
        process.stdin.close()
        returncode = process.wait(timeout=60)
        errors = process.stderr.read().decode(errors="replace")
    assert returncode == 0, errors

    # The server, of the same project, does call it.
    settings = Settings(database_url=database_url, data_dir=tmp_path / "data")
    with TestClient(create_app(settings), raise_server_exceptions=False):
        target.wait_for("/ok/stdio", 1, timeout=10)
