"""The `kilnbase` command run as a person runs it, for the CLI's tests: a fresh process, none of the test
run's own settings (`KILNBASE_*`, `DATABASE_URL`, `PORT`) unless a test gives them, no functions host port
of its own, an 80-column terminal (rich wraps at its width), and no terminal to read from."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
_TEST_RUN_SETTINGS = ("KILNBASE_", "DATABASE_URL", "PORT")


def run_kilnbase(
    args: Sequence[str],
    *,
    data_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    columns: int = 80,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """`kilnbase <args> [--data-dir data_dir]` (`serve` alone on a free port), with `env` added to the
    environment, and `prefix` before the Python that runs it (a wrapper such as `capsh`)."""
    command = list(args)
    if command == ["serve"]:
        command = ["serve", "--port", str(free_port())]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    environment = {k: v for k, v in os.environ.items() if not k.startswith(_TEST_RUN_SETTINGS)}
    environment |= {"KILNBASE_FUNCTIONS_HOST_PORT": "0", "COLUMNS": str(columns), **(env or {})}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "kilnbase", *command],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=environment,
        stdin=subprocess.DEVNULL,
    )


def assert_said_in_one_line(result: subprocess.CompletedProcess[str], *said: str) -> None:
    """The command failed (exit 1) with one `Error:` line on standard error, holding each of `said`, and no
    traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for text in said:
        assert text in lines[0], lines[0]
