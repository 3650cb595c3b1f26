"""What the summaries keep of a URL, which sections an agent key's scopes reach, and a missing table,
without a database."""

from __future__ import annotations

from typing import Any, cast

import pytest
from psycopg import AsyncCursor
from psycopg.rows import DictRow

from kilnbase.identity.principal import API_KEY_HOLDER, CredentialKind, Principal
from kilnbase.metadata.markdown import _memory
from kilnbase.metadata.sections import SECTIONS, visible
from kilnbase.metadata.summaries import SUMMARIES, read, schedule_target, url_host


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://user:pass@hooks.example.com/in/tok?token=q#frag", "hooks.example.com"),
        ("http://Example.COM:8080/x", "example.com:8080"),
        ("http://[::1]:7130/hook", "[::1]:7130"),
        ("https://example.com:notaport/x", None),
        ("not a url", None),
    ],
)
def test_only_the_host_of_a_url_is_kept(url: str, host: str | None) -> None:
    assert url_host(url) == host


def test_a_schedule_on_this_server_shows_its_path_without_the_query() -> None:
    assert schedule_target("/functions/report?token=abc#x") == "/functions/report"
    assert schedule_target("https://u:p@jobs.example.com/run?k=v") == "jobs.example.com"


def _agent(*scopes: str) -> Principal:
    return Principal(db_role="project_admin", kind=CredentialKind.AGENT_KEY, scopes=frozenset(scopes))


def test_each_section_needs_its_groups_read_scope() -> None:
    assert visible(API_KEY_HOLDER) == SECTIONS
    assert visible(_agent("metadata:read")) == ()
    scoped = _agent("metadata:read", "storage:read", "webhooks:read", "memory:write")
    assert [s.key for s in visible(scoped)] == ["storage", "databaseWebhooks", "memory"]
    assert visible(_agent("*:read")) == SECTIONS


class _NoDatabase:
    async def execute(self, *args: Any) -> None:
        raise AssertionError("a section whose table is missing reads nothing")


@pytest.mark.anyio
async def test_a_missing_table_gives_an_empty_section_never_an_error() -> None:
    """Agent memory is left out of a database without pgvector: its section is empty, and says why."""
    cursor = cast(AsyncCursor[DictRow], _NoDatabase())
    found = await read(cursor, SECTIONS, installed=set())
    assert set(found) == {section.key for section in SUMMARIES}
    assert found["memory"] == {"totalScopes": 0, "scopes": []}
    assert found["schedules"] == {"total": 0, "jobs": []} and found["advisor"]["latestScan"] is None
    assert _memory(found["memory"], installed=False) == [
        "## Agent memory",
        "Not available in this server (its database lacks pgvector).",
    ]
