"""`make run` (and `make test`'s install) on a fresh machine: each slow step says what it does before it
starts, and pip is not silenced, so a minute of installing never looks like a hang.

Run for real with a stand-in Python whose venv's tools only say that they ran: the recipes, their order and
their arguments are the Makefile's own; nothing is downloaded."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: `python3 -m venv DIR` makes DIR/bin/{python,pip,kilnbase}, each printing how it was called.
STAND_IN_PYTHON = """#!/bin/sh
[ "$1" = "-m" ] && [ "$2" = "venv" ] || exit 1
mkdir -p "$3/bin"
for tool in python pip kilnbase; do
  printf '#!/bin/sh\\necho "ran %s $*"\\n' "$tool" > "$3/bin/$tool"
  chmod +x "$3/bin/$tool"
done
"""


def make(tmp_path: Path, target: str) -> list[str]:
    python = tmp_path / "python3"
    python.write_text(STAND_IN_PYTHON)
    python.chmod(0o755)
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["make", "--no-print-directory", f"PYTHON={python}", f"VENV={venv}", target.format(venv=venv)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def said_before(lines: list[str], announcement: str, step: str) -> int:
    """Where `step` ran, after a line that starts with `announcement` and says it can take a while."""
    said = next(i for i, line in enumerate(lines) if line.startswith(announcement))
    ran = next(i for i, line in enumerate(lines) if line.startswith(step))
    assert said < ran, lines
    return ran


@pytest.mark.parametrize(
    ("target", "announcement", "install"),
    [
        ("run", "==> Installing Kilnbase and its dependencies", "ran pip install -e ."),
        (
            "{venv}/.test-installed",
            "==> Installing Kilnbase with its test tools",
            "ran pip install -e .[test]",
        ),
    ],
)
def test_each_slow_step_says_what_it_does_first(
    tmp_path: Path, target: str, announcement: str, install: str
) -> None:
    lines = make(tmp_path, target)
    said_before(lines, "==> Creating a virtual environment", "ran python -m pip install")
    installed = said_before(lines, announcement, install)
    assert "--quiet" not in lines[installed], "pip's own progress is the only sign of life for a minute"
    assert any("can take a" in line for line in lines if line.startswith(announcement)), lines
    if target == "run":
        assert lines[-1].startswith("ran kilnbase serve"), lines
