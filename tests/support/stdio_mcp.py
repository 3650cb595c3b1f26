"""`kilnbase mcp` as an editor starts it: a child process over the test's database, spoken to as JSON-RPC
lines on its standard input and output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]


def send(pipe: IO[bytes], message: dict[str, Any]) -> None:
    pipe.write((json.dumps({"jsonrpc": "2.0", **message}) + "\n").encode())
    pipe.flush()


@contextmanager
def stdio_mcp(database_url: str, data_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The process, without the test run's `KILNBASE_*` settings; killed on the way out if it still runs
    (its pipes closed either way)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KILNBASE_", "PORT"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "kilnbase", "mcp", "--data-dir", str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env | {"DATABASE_URL": database_url},
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pipe in (process.stdin, process.stdout, process.stderr):
            pipe.close()


def initialize(process: subprocess.Popen[bytes], client_name: str) -> None:
    """The session's first exchange (every capability has started once it is answered)."""
    assert process.stdin is not None and process.stdout is not None
    client = {"name": client_name, "version": "1"}
    send(
        process.stdin,
        {
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": client},
        },
    )
    assert b'"id":1' in process.stdout.readline()
