"""`kilnbase mcp` when its agent goes away mid-answer: the session ends quietly (exit 0, no traceback), as
when the agent closes standard input between answers."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.stdio_mcp import initialize, send, stdio_mcp


def test_the_agent_closing_its_pipe_ends_the_session_quietly(database_url: str, tmp_path: Path) -> None:
    with stdio_mcp(database_url, tmp_path / "data") as process:
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        initialize(process, "closing-agent")
        send(process.stdin, {"method": "notifications/initialized"})
        # The agent goes away while the server still has an answer to write: its end of the server's
        # standard output is closed first, then (once the answer has met the closed pipe) standard input.
        process.stdout.close()
        send(process.stdin, {"id": 2, "method": "tools/list"})
        time.sleep(1)
        process.stdin.close()
        returncode = process.wait(timeout=60)
        errors = process.stderr.read().decode(errors="replace")
    assert "Traceback" not in errors, errors
    assert "BrokenPipeError" not in errors, errors
    assert returncode == 0, errors
