"""A `DATABASE_URL` that cannot be used, as an operator meets it: one that nothing answers, and one mistyped
so that libpq cannot even read it. Every command that uses the database says so in one line, with what to
check, and no traceback; and a URL libpq cannot read is never echoed, since it holds the database's
password."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kilnbase.config import Settings
from kilnbase.keys.project_keys import load_project_keys
from tests.support.cli import run_kilnbase
from tests.support.postgres import reachable_scratch
from tests.support.servers import free_port

PASSWORD = "s3cr3t-db-password"

#: Each command as a user types it; the data dir (and a backup file for `db restore`) is appended.
COMMANDS = {
    "keys": ["keys"],
    "audit sessions": ["audit", "sessions"],
    "audit replay": ["audit", "replay", "some-session"],
    "db backup": ["db", "backup"],
    "db migrate": ["db", "migrate"],
    "db restore": ["db", "restore"],
    "mcp": ["mcp"],
    "serve": ["serve"],
}

#: A URL libpq cannot read (a ':' for a '/' after the scheme, a '%' not followed by two hex digits), and
#: one it reads but nothing answers.
URLS = {
    "unreadable": f"postgresql:/admin:{PASSWORD}@db.example/app",
    "bad percent escape": f"postgresql://admin:{PASSWORD}%zz@127.0.0.1/app",
    "nothing answers": f"postgresql://admin:{PASSWORD}@127.0.0.1:{{port}}/app",
}


@pytest.fixture
def scratch() -> Iterator[Path]:
    with reachable_scratch("kbdburl-") as parent:
        yield parent


def kilnbase(args: list[str], scratch: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    data_dir = scratch / "project"
    load_project_keys(Settings(data_dir=data_dir))  # (a project's keys, as every command but restore needs)
    if args == ["db", "restore"]:
        (scratch / "backup.tar").write_bytes(b"")
        args, data_dir = [*args, str(scratch / "backup.tar")], scratch / "restored"
    return run_kilnbase(args, data_dir=data_dir, env={"DATABASE_URL": database_url})


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_database_url_that_cannot_be_used(scratch: Path, command: str, url: str) -> None:
    result = kilnbase(COMMANDS[command], scratch, URLS[url].format(port=free_port()))
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    said = result.stderr.strip().splitlines()[-1]
    assert said.startswith("Error: ") and "DATABASE_URL" in said, result.stderr
    if url == "nothing answers":
        assert "Connection refused" in said and "Check host, port and credentials" in said, said
    else:
        assert "postgresql://USER:PASSWORD@HOST:PORT/DATABASE" in said, said
    assert PASSWORD not in result.stderr + result.stdout
