"""The markdown written for agents: a 10-table project fits in 2,000 tokens (characters / 4) and says what an
agent needs (RLS and policies per table, what anon may do, foreign keys, auth settings); its schema
fingerprint changes whenever DDL changes the schema."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.metadata.project_generator import project_sql


@pytest.fixture(scope="module")
def project(sql: Callable[[str], Any]) -> None:
    sql(project_sql(10))


def _markdown(client: TestClient, admin: dict[str, str]) -> str:
    response = client.get("/api/metadata?format=markdown", headers=admin)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/markdown")
    return response.text


def test_ten_tables_fit_in_two_thousand_tokens(
    client: TestClient, admin: dict[str, str], project: None
) -> None:
    text = _markdown(client, admin)
    assert text.count("\n### ") == 10
    assert len(text) / 4 < 2000, len(text)


def test_markdown_says_what_an_agent_needs(client: TestClient, admin: dict[str, str], project: None) -> None:
    text = _markdown(client, admin)
    assert "### items_002 (0 rows; RLS on; anon: read)" in text
    assert "owner_id uuid ->profiles.id" in text and "parent_id bigint? ->items_001.id" in text
    assert "- policy read_items_002: SELECT to anon,authenticated using (status = 'published')" in text
    assert "project_admin_policy:" not in text
    assert "- anon can read: items_001," in text
    assert "- anon can write: none" in text
    assert "email verification: not required" in text and "OAuth providers: none" in text
    assert "## Storage\n- buckets: none" in text  # storage is installed: its buckets, none yet


def test_agent_context_is_json_lines(client: TestClient, admin: dict[str, str], project: None) -> None:
    body = client.get("/api/metadata?mcp=true", headers=admin).json()
    assert body["backend"][0].startswith("# Kilnbase backend")
    assert body["schemaFingerprint"] == client.get("/api/metadata", headers=admin).json()["schemaFingerprint"]


def test_fingerprint_changes_on_any_ddl(
    client: TestClient, admin: dict[str, str], sql: Callable[[str], Any], project: None
) -> None:
    def fingerprint() -> str:
        value: str = client.get("/api/metadata/database", headers=admin).json()["schemaFingerprint"]
        return value

    before = fingerprint()
    assert fingerprint() == before  # stable while nothing changes
    steps = [before]
    for ddl in (
        "create table fp_probe (id int primary key)",
        "alter table fp_probe add column note text",
        "alter table fp_probe alter column note set default 'x'",
        "create index on fp_probe (note)",
        "alter table fp_probe disable row level security",  # (on by default: an event trigger enables it)
        "create policy fp_read on fp_probe for select to anon using (true)",
        "create or replace function fp_fn() returns int language sql as 'select 1'",
        "create or replace function fp_fn() returns int language sql as 'select 2'",
        "revoke delete on fp_probe from anon",
        "create view fp_view as select id from fp_probe",
        "drop view fp_view",
    ):
        sql(ddl)
        steps.append(fingerprint())
        assert steps[-1] != steps[-2], ddl
    # It fingerprints the schema, not its history: undoing a change gives the earlier fingerprint back.
    assert steps[-1] == steps[-3]
    sql("drop table fp_probe; drop function fp_fn()")
    assert fingerprint() == before
