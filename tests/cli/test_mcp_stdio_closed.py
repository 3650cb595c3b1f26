"""`kilnbase mcp` when its agent goes away mid-answer: the session ends quietly (exit 0, no traceback), as
when the agent closes standard input between answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]


def send(pipe: IO[bytes], message: dict[str, Any]) -> None:
    pipe.write((json.dumps({"jsonrpc": "2.0", **message}) + "\n").encode())
    pipe.flush()


def test_the_agent_closing_its_pipe_ends_the_session_quietly(database_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KILNBASE_", "PORT"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "kilnbase", "mcp", "--data-dir", str(tmp_path / "data")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env | {"DATABASE_URL": database_url},
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    try:
        client = {"name": "closing-agent", "version": "1"}
        send(
            process.stdin,
            {
                "id": 1,
                "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": client},
            },
        )
        assert b'"id":1' in process.stdout.readline()
        send(process.stdin, {"method": "notifications/initialized"})
        # The agent goes away while the server still has an answer to write: its end of the server's
        # standard output is closed first, then (once the answer has met the closed pipe) standard input.
        process.stdout.close()
        send(process.stdin, {"id": 2, "method": "tools/list"})
        time.sleep(1)
        process.stdin.close()
        returncode = process.wait(timeout=60)
        errors = process.stderr.read().decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdin.close()
        process.stderr.close()
    assert "Traceback" not in errors, errors
    assert "BrokenPipeError" not in errors, errors
    assert returncode == 0, errors
