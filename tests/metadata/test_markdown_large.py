"""A 100-table project's markdown stays readable: one line per table, and the advice to ask for a table's
schema on demand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.testclient import TestClient

from tests.metadata.project_generator import project_sql


def test_hundred_tables_get_a_summary(
    client: TestClient, admin: dict[str, str], sql: Callable[[str], Any]
) -> None:
    sql(project_sql(100))
    text = client.get("/api/metadata?format=markdown", headers=admin).text
    assert "one line each; ask for a table's columns, keys and policies with `get-table-schema`" in text
    assert "- items_099 (0 rows; RLS on; anon: read)" in text
    assert "\n### " not in text
    assert len(text) / 4 < 4000, len(text)
    table = client.get("/api/metadata/items_099", headers=admin).json()["items_099"]
    assert table["foreignKeys"][0]["referenceTable"] in ("items_098", "profiles")
