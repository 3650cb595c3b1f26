"""Property tests of the URL grammar: values round-trip through quoting, and hostile input (quotes,
parentheses, SQL fragments, unicode) is either parsed or refused with PGRST1xx, never executed as SQL."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from kilnbase.records.errors import RecordsError
from kilnbase.records.query_grammar import (
    Filter,
    LogicTree,
    parse_logic_tree,
    parse_operation,
    parse_order,
    parse_query,
    parse_select,
)

SQL_FRAGMENTS = [
    "'",
    '"',
    ";",
    "--",
    "/*",
    "*/",
    "(",
    ")",
    ",",
    ".",
    ":",
    "::",
    "->",
    "\\",
    "%",
    "%s",
    "$1",
    "drop table posts",
    "' or 1=1 --",
    ");delete from posts;--",
    "é",
    "🙂",
    "\u202e",
    " ",
]
hostile_text = st.lists(st.one_of(st.sampled_from(SQL_FRAGMENTS), st.text(max_size=5)), max_size=8).map(
    "".join
)
plain_text = hostile_text.filter(lambda s: "\x00" not in s)


def postgrest_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(deadline=None)
@given(plain_text)
def test_plain_filter_values_are_taken_verbatim(value: str) -> None:
    operation = parse_operation(f"eq.{value}")
    assert operation.operator == "eq"
    assert operation.value == value


@settings(deadline=None)
@given(st.lists(plain_text, max_size=6))
def test_quoted_in_lists_round_trip(values: list[str]) -> None:
    text = "in.(" + ",".join(postgrest_quote(v) for v in values) + ")"
    assert parse_operation(text).value == tuple(values)


@settings(deadline=None)
@given(plain_text)
def test_quoted_values_in_logic_trees_round_trip(value: str) -> None:
    tree = parse_logic_tree("or", False, f"(title.eq.{postgrest_quote(value)},id.eq.1)")
    first = tree.children[0]
    assert isinstance(first, Filter)
    assert first.operation.value == value


def _refusal(parse: Any, text: Any) -> RecordsError | None:
    try:
        parse(text)
    except RecordsError as exc:
        return exc
    return None


@settings(deadline=None)
@given(hostile_text)
def test_hostile_input_parses_or_is_refused_cleanly(text: str) -> None:
    for parse in (parse_select, parse_order, lambda t: parse_logic_tree("and", False, t), parse_operation):
        error = _refusal(parse, text)
        if error is not None:
            assert error.status in (400, 416)
            assert error.code.startswith("PGRST")


@settings(deadline=None)
@given(st.lists(st.tuples(hostile_text, hostile_text), max_size=4))
def test_whole_query_strings_never_crash(pairs: list[tuple[str, str]]) -> None:
    error = _refusal(parse_query, pairs)
    if error is not None:
        assert error.code.startswith("PGRST")
        return
    query = parse_query(pairs)
    for conditions in query.conditions.values():
        assert all(isinstance(c, Filter | LogicTree) for c in conditions)


@pytest.fixture(scope="module", autouse=True)
def canary(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE canary (id serial PRIMARY KEY, value text NOT NULL)")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plain_text)
def test_hostile_values_are_bound_never_spliced(
    client: TestClient, admin: dict[str, str], value: str
) -> None:
    created = client.post(
        "/api/database/records/canary?select=id,value",
        headers={**admin, "Prefer": "return=representation"},
        json={"value": value},
    )
    assert created.status_code == 201, created.text
    row = created.json()[0]
    assert row["value"] == value
    found = client.get(
        f"/api/database/records/canary?select=value&id=eq.{row['id']}&value=eq.{quote(value)}", headers=admin
    )
    assert found.status_code == 200, found.text
    assert found.json() == [{"value": value}]
    listed = client.get(
        f"/api/database/records/canary?select=id&value=in.({quote(postgrest_quote(value))})", headers=admin
    )
    assert listed.status_code == 200
    assert {"id": row["id"]} in listed.json()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=hostile_text, value=hostile_text, select=hostile_text, order=hostile_text)
def test_hostile_query_strings_are_never_server_errors(
    client: TestClient, admin: dict[str, str], key: str, value: str, select: str, order: str
) -> None:
    query = "&".join(
        f"{quote(k, safe='')}={quote(v, safe='')}"
        for k, v in [(key or "x", value), ("select", select), ("order", order)]
    )
    response = client.get(f"/api/database/records/posts?{query}", headers=admin)
    assert response.status_code < 500, (query, response.text)
    if response.status_code >= 300:
        assert set(response.json()) == {"code", "message", "details", "hint"}
    count = client.get("/api/database/records/posts?select=id", headers={**admin, "Prefer": "count=exact"})
    assert count.headers["content-range"].endswith("/4")


@pytest.mark.parametrize(
    "query",
    [
        "select=" + "a(" * 3000 + ")" * 3000,
        "or=(" + "and(" * 3000 + "id.eq.1" + ")" * 3001,
    ],
)
def test_deep_nesting_is_refused_not_a_crash(client: TestClient, admin: dict[str, str], query: str) -> None:
    response = client.get(f"/api/database/records/posts?{query}", headers=admin)
    assert response.status_code == 400
    assert response.json()["code"] == "PGRST100"
