"""Every ```sh example of `docs/*.md` runs, in order, against a fresh `kilnbase serve` (one per doc file),
and prints what the doc says it prints: a doc can never drift from the code. The convention is at the top of
`docs/README.md`; the runner is `doc_examples.py`.

The server is a real process over a fresh database of the session's cluster, with the model gateway pointed
at the loopback fake OpenRouter, so that the AI examples answer without a network."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.doc_examples import read_steps, run_file
from tests.support.fake_openrouter import FakeOpenRouter
from tests.support.postgres import TestCluster
from tests.support.servers import ServerProcess, free_port

DOCS = Path(__file__).resolve().parents[2] / "docs"
WITH_EXAMPLES = sorted(path for path in DOCS.glob("*.md") if read_steps(path))


@pytest.fixture(scope="module")
def openrouter() -> Iterator[FakeOpenRouter]:
    fake = FakeOpenRouter().start()
    yield fake
    fake.stop()


def test_the_docs_that_list_routes_have_examples() -> None:
    names = {path.name for path in WITH_EXAMPLES}
    assert {"auth.md", "database.md", "ai-gateway.md", "security.md"} <= names


@pytest.mark.parametrize("doc", WITH_EXAMPLES, ids=[path.name for path in WITH_EXAMPLES])
def test_doc_examples_print_what_the_doc_says(
    doc: Path, cluster: TestCluster, openrouter: FakeOpenRouter, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = {
        "DATABASE_URL": cluster.create_database("docs"),
        "OPENROUTER_API_KEY": "sk-or-v1-fake",
        "OPENROUTER_BASE_URL": openrouter.url,
    }
    shell: dict[str, str] = {}
    if doc.name == "functions.md":  # (the functions host, on a port of its own)
        host_port = free_port()
        env["KILNBASE_FUNCTIONS_HOST_PORT"] = str(host_port)
        shell["KB_FUNCTIONS_URL"] = f"http://127.0.0.1:{host_port}"
    server = ServerProcess(data_dir, env=env)
    server.start()
    try:
        keys = json.loads((data_dir / "keys.json").read_text())
        shell.update(KB_URL=server.url, KB_API_KEY=keys["api_key"], KB_ANON_KEY=keys["anon_key"])
        workdir = tmp_path / "work"
        workdir.mkdir()
        run = run_file(doc, shell, workdir)
    finally:
        server.stop()
    assert run.outcomes, f"{doc.name}: no example ran"
    assert not run.failures, "\n\n".join(run.failures)
