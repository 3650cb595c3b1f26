"""The examples in the agent documents run, as written, against a real `kilnbase serve`: the shell blocks
with bash, curl and jq (`set -e`, and `curl -f` fails on an error status), the Python blocks with this
interpreter, the TypeScript blocks with Node and the official `@insforge/sdk`. The AI documents' examples
need a model provider: `test_ai_docs_examples.py` runs them against a scripted one."""

from __future__ import annotations

import os
import re
import subprocess
import sys

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


@pytest.mark.parametrize(
    "path", ["/api/docs/instructions", "/api/docs/db/rest-api", "/api/docs/auth/rest-api"]
)
def test_shell_examples_run(live_keys: dict[str, str], path: str) -> None:
    script = "set -euo pipefail\n" + _blocks(live_keys, path, "sh")
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, env=_env(live_keys), check=False
    )
    assert result.returncode == 0, f"{path}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    if path.endswith("db/rest-api"):
        assert result.stdout.split() == ["true", "401"]


@pytest.mark.parametrize("path", ["/api/docs/db/python", "/api/docs/auth/python"])
def test_python_examples_run(live_keys: dict[str, str], path: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _blocks(live_keys, path, "python")],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(live_keys),
        check=False,
    )
    assert result.returncode == 0, f"{path}\n{result.stderr}"


@pytest.mark.parametrize("path", ["/api/docs/db-sdk", "/api/docs/auth-sdk"])
def test_typescript_examples_run(live_keys: dict[str, str], path: str) -> None:
    content = httpx.get(f"{live_keys['url']}{path}").json()["content"]
    for _lang, statements in (match for match in _BLOCK.findall(content) if match[0] == "sql"):
        # The SQL a document says to run first (with `run-raw-sql`), run the same way.
        answer = httpx.post(
            f"{live_keys['url']}/api/database/advance/rawsql",
            json={"query": statements},
            headers={"x-api-key": live_keys["apiKey"]},
        )
        assert answer.status_code == 200, answer.text
    script = _blocks(live_keys, path, "typescript") + "\nconsole.log(JSON.stringify({ ran: true }));\n"
    assert run_node(script, _env(live_keys)) == {"ran": True}
