"""`kilnbase ... --help` as a user reads it: every option's default is shown as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("command", "default"),
    [
        (["mcp"], "[the project's API key]"),
        (["approvals", "list"], "[the data dir's URL]"),
        (["serve"], "[./.kilnbase]"),
    ],
)
def test_help_shows_the_defaults_in_brackets(command: list[str], default: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kilnbase", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert default in result.stdout
