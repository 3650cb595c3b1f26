"""Commands that read a project, given a data dir that holds none (a mistyped --data-dir): they say so and
create nothing there, rather than make a new project's keys and answer as if the path were right."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import run_kilnbase

COMMANDS = {
    "audit sessions": ["audit", "sessions"],
    "audit replay": ["audit", "replay", "some-session"],
    "approvals list": ["approvals", "list"],
    "approvals approve": ["approvals", "approve", "some-id"],
    "approvals reject": ["approvals", "reject", "some-id"],
    "mcp": ["mcp"],
    "db adopt-encryption-key": ["db", "adopt-encryption-key"],
}


@pytest.fixture
def scratch() -> Iterator[Path]:
    parent = Path(tempfile.mkdtemp(prefix="kbnoproject-", dir="/tmp"))
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


def kilnbase(*args: str) -> subprocess.CompletedProcess[str]:
    return run_kilnbase(args, columns=200)


@pytest.mark.parametrize("made", [False, True], ids=["missing", "empty"])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_data_dir_with_no_project(scratch: Path, command: str, made: bool) -> None:
    data_dir = scratch / "shop-typo"
    if made:
        data_dir.mkdir()
    result = kilnbase(*COMMANDS[command], "--data-dir", str(data_dir))
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stderr.strip() == (
        f"Error: No project in {data_dir} (no keys.json there). Pass the --data-dir (or KILNBASE_DATA_DIR) "
        "that kilnbase serve was started with."
    )
    assert list(scratch.rglob("*")) == ([data_dir] if made else [])


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_audit_sessions_needs_a_positive_limit(scratch: Path, limit: str) -> None:
    result = kilnbase("audit", "sessions", "--limit", limit, "--data-dir", str(scratch))
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Invalid value for '--limit'" in result.stderr and "Traceback" not in result.stderr
