"""The AI documents' examples, as written, against `kilnbase serve` whose gateway talks to a scripted
OpenRouter-compatible upstream on loopback (`tests/support/fake_openrouter.py`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.agent_docs.test_docs_examples import _blocks, _env
from tests.support.fake_openrouter import FakeOpenRouter
from tests.support.node import run_node
from tests.support.servers import ServerProcess

_ANSWER = "Hello from openai/gpt-4o-mini: you said 'Say hello'."


@pytest.fixture(scope="module")
def gateway_env() -> Iterator[FakeOpenRouter]:
    """Started before `live_server`, so the server process inherits OPENROUTER_* from the environment."""
    fake = FakeOpenRouter().start()
    patch = pytest.MonkeyPatch()
    patch.setenv("OPENROUTER_BASE_URL", fake.url)
    patch.setenv("OPENROUTER_API_KEY", "sk-or-v1-fake")
    yield fake
    patch.undo()
    fake.stop()


@pytest.fixture(scope="module")
def ai_keys(
    gateway_env: FakeOpenRouter, live_server: ServerProcess, live_keys: dict[str, str]
) -> dict[str, str]:
    return live_keys


def test_rest_example(ai_keys: dict[str, str]) -> None:
    script = "set -euo pipefail\n" + _blocks(ai_keys, "/api/docs/ai/rest-api", "sh")
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, env=_env(ai_keys)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == _ANSWER


def test_python_example(ai_keys: dict[str, str]) -> None:
    code = _blocks(ai_keys, "/api/docs/ai/python", "python")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_env(ai_keys)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == _ANSWER


def test_typescript_example(ai_keys: dict[str, str]) -> None:
    script = (
        _blocks(ai_keys, "/api/docs/ai-integration-sdk", "typescript")
        + "\nconsole.log(JSON.stringify({ ran: true }));\n"
    )
    assert run_node(script, _env(ai_keys)) == {"ran": True}
