"""Every route of the public API (auth, database and records, the gateway, secrets, schedules, advisor,
memory, kv, config, storage, functions, realtime, metadata, logs, docs, agents, approvals, MCP) has a runnable
example in `docs/` (one that `test_doc_examples.py` runs): a new route without one fails here, naming it."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.routing import BaseRoute, Route

from kilnbase.app import create_app
from kilnbase.config import Settings
from tests.docs.doc_examples import read_steps

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOCUMENTED = (
    "/api/auth",
    "/api/database",
    "/api/ai",
    "/v1/",
    "/api/secrets",
    "/api/schedules",
    "/api/advisor",
    "/api/memory",
    "/api/kv",
    "/api/config",
    "/.well-known",
    "/api/.well-known",
    "/api/storage",
    "/api/functions",
    "/functions/",
    "/api/realtime",
    "/api/metadata",
    "/api/logs",
    "/api/docs",
    "/api/agents",
    "/api/approvals",
    "/api/usage",
    "/mcp",
)
EXAMPLE_FILES = tuple(sorted(path.name for path in DOCS.glob("*.md")))


def _routes(routes: list[BaseRoute]) -> list[str]:
    found = []
    for route in routes:
        inner = getattr(route, "routes", None)
        if isinstance(inner, list) and not isinstance(route, Route):
            found += _routes(inner)
        elif isinstance(route, Route):
            found.append(route.path)
    return found


def test_every_route_has_a_runnable_example(tmp_path: Path) -> None:
    app = create_app(Settings(database_url="postgresql://nobody@127.0.0.1:1/none", data_dir=tmp_path))
    examples = "\n".join(step.code for name in EXAMPLE_FILES for step in read_steps(DOCS / name))
    missing = []
    for path in _routes(app.routes):
        if not path.startswith(DOCUMENTED):
            continue
        # `{param}` in a route is any segment in the example (a value or a shell variable).
        pattern = re.sub(r"\\\{[^}]*\\\}", "[^\"' ?/]+(?:/[^\"' ?]+)*", re.escape(path))
        if not re.search(pattern + r"(?:[\"'?\s]|$)", examples):
            missing.append(path)
    assert missing == [], f"routes without an example in docs/{{{','.join(EXAMPLE_FILES)}}}: {missing}"
