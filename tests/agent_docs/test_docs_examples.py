"""The examples in the agent documents run, as written, against a real `kilnbase serve`: the shell blocks
with bash, curl and jq (`set -e`, and `curl -f` fails on an error status), the Python blocks with this
interpreter, the TypeScript blocks with Node and the official `@insforge/sdk` (after the document's SQL and
shell blocks, the admin's setup). Each document's example makes its own buckets, functions, channels and
tables, so they run in any order on one server. The AI documents' examples need a model provider:
`test_ai_docs_examples.py` runs them against a scripted one."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.node import run_node

_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)
_DOCS_URL = "http://localhost:7130"


def _blocks(live_keys: dict[str, str], path: str, language: str) -> str:
    content = httpx.get(f"{live_keys['url']}{path}").json()["content"]
    # As `@insforge/mcp` does: the documents' base URL becomes the server's.
    content = content.replace(_DOCS_URL, live_keys["url"])
    found = [code for lang, code in _BLOCK.findall(content) if lang == language]
    assert found, f"no {language} example in {path}"
    return "\n".join(found)


def _env(live_keys: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "KB_API_KEY": live_keys["apiKey"], "KB_ANON_KEY": live_keys["anonKey"]}


def _run_sql_blocks(live_keys: dict[str, str], path: str) -> None:
    """The SQL a document says to run (with `run-raw-sql`), run the same way."""
    content = httpx.get(f"{live_keys['url']}{path}").json()["content"]
    for _lang, statements in (match for match in _BLOCK.findall(content) if match[0] == "sql"):
        answer = httpx.post(
            f"{live_keys['url']}/api/database/advance/rawsql",
            json={"query": statements},
            headers={"x-api-key": live_keys["apiKey"]},
        )
        assert answer.status_code == 200, answer.text


def _has_blocks(live_keys: dict[str, str], path: str, language: str) -> bool:
    content = httpx.get(f"{live_keys['url']}{path}").json()["content"]
    return any(lang == language for lang, _code in _BLOCK.findall(content))


def _run(live_keys: dict[str, str], argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env=_env(live_keys), cwd=cwd, check=False
    )


def _bash(live_keys: dict[str, str], script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run(live_keys, ["bash", "-c", "set -euo pipefail\n" + script], cwd)


#: What a document's shell example prints, line by line (`None`: a line that varies).
_SHELL_OUTPUT: dict[str, list[str | None]] = {
    "/api/docs/db/rest-api": ["true", "401"],
    "/api/docs/storage/rest-api": [
        "201",
        '{"key":"notes/today.txt","size":15,"mimeType":"text/plain"}',
        "hello, storage",
        '["notes/today.txt"]',
        "401",
        "404",
        "hello, storage",
        "Object deleted successfully",
    ],
    "/api/docs/functions/rest-api": [
        '{"hello":"kiln","greeting":"bonjour","user":null}',
        "true",
        "FUNCTION_CHECK_FAILED",
        "world",
        "running",
    ],
    "/api/docs/payments/rest-api": [
        '[{"environment":"test","status":"unconfigured"},{"environment":"live","status":"unconfigured"}]',
        "PAYMENT_CONFIG_INVALID",
        '{"transactions":[]}',
    ],
    "/api/docs/realtime/rest-api": [
        "201",
        None,  # the policies' names: these two, beside those other documents' examples made
        '[{"published":true}]',
        '{"channelName":"order:42","eventName":"status_changed","payload":{"status":"shipped"},'
        '"senderType":"system"}',
        "REALTIME_INVALID_CHANNEL_PATTERN",
    ],
}


@pytest.mark.parametrize(
    "path",
    [
        "/api/docs/instructions",
        "/api/docs/db/rest-api",
        "/api/docs/auth/rest-api",
        "/api/docs/storage/rest-api",
        "/api/docs/functions/rest-api",
        "/api/docs/realtime/rest-api",
        "/api/docs/payments/rest-api",
    ],
)
def test_shell_examples_run(live_keys: dict[str, str], path: str, tmp_path: Path) -> None:
    _run_sql_blocks(live_keys, path)
    result = _bash(live_keys, _blocks(live_keys, path, "sh"), tmp_path)
    assert result.returncode == 0, f"{path}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    if path in _SHELL_OUTPUT:
        lines, expected = result.stdout.splitlines(), _SHELL_OUTPUT[path]
        assert len(lines) == len(expected), result.stdout
        shown = [None if want is None else line for line, want in zip(lines, expected, strict=True)]
        assert shown == expected, result.stdout
    if path.endswith("realtime/rest-api"):
        policies = json.loads(result.stdout.splitlines()[1])
        assert "orders_follow" in policies["subscribe"] and "orders_publish" in policies["publish"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/docs/db/python",
        "/api/docs/auth/python",
        "/api/docs/storage/python",
        "/api/docs/functions/python",
        "/api/docs/realtime/python",
        "/api/docs/payments/python",
    ],
)
def test_python_examples_run(live_keys: dict[str, str], path: str, tmp_path: Path) -> None:
    _run_sql_blocks(live_keys, path)
    result = _run(live_keys, [sys.executable, "-c", _blocks(live_keys, path, "python")], tmp_path)
    assert result.returncode == 0, f"{path}\n{result.stderr}"


@pytest.mark.parametrize(
    "path",
    [
        "/api/docs/db-sdk",
        "/api/docs/auth-sdk",
        "/api/docs/storage-sdk",
        "/api/docs/functions-sdk",
        "/api/docs/real-time",
        "/api/docs/payments",
    ],
)
def test_typescript_examples_run(live_keys: dict[str, str], path: str, tmp_path: Path) -> None:
    # What a document says an admin does first: its SQL (`run-raw-sql`), then its shell commands.
    _run_sql_blocks(live_keys, path)
    if _has_blocks(live_keys, path, "sh"):
        setup = _bash(live_keys, _blocks(live_keys, path, "sh"), tmp_path)
        assert setup.returncode == 0, f"{path}\nstdout:\n{setup.stdout}\nstderr:\n{setup.stderr}"
    script = _blocks(live_keys, path, "typescript") + "\nconsole.log(JSON.stringify({ ran: true }));\n"
    assert run_node(script, _env(live_keys)) == {"ran": True}
