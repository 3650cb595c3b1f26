"""`GET /api/database/browse/{table}`: InsForge's table browser (`routes/database/browse.routes.ts`,
`services/database/database-browse.service.ts`): a page of rows, the total in `Content-Range` (206 for a
part), `limit` clamped, `order` and `search` checked against the table's columns, oversized cells guarded.

Each test makes its own table (a name of its own) through raw SQL, so the tests hold in any order."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.database.conftest import NewName
from tests.support.app import agent_headers

BROWSE = "/api/database/browse"
RAW = "/api/database/advance/rawsql"
GUARDED = {"__GuardedValue": True, "message": "data too large to show"}


def sql(client: TestClient, admin: dict[str, str], query: str) -> None:
    response = client.post(RAW, json={"query": query}, headers=admin)
    assert response.status_code == 200, response.text


@pytest.fixture
def notes(client: TestClient, admin: dict[str, str], new_name: NewName) -> str:
    """25 notes: id 1..25, created one minute apart (the newest last), title `note N`, every third one
    tagged `Urgent_%` (a LIKE wildcard in the text itself)."""
    table = new_name("notes")
    sql(
        client,
        admin,
        f"create table {table} (id int primary key, title text not null, body text, score int,"
        f" created_at timestamptz not null);"
        f" insert into {table} select g, 'note ' || g || case when g % 3 = 0 then ' Urgent_%' else '' end,"
        f" null, g % 5, timestamptz '2026-01-01' + g * interval '1 minute' from generate_series(1, 25) g",
    )
    return table


def ids(rows: list[dict[str, Any]]) -> list[int]:
    return [row["id"] for row in rows]


def test_first_page_is_newest_ten_with_the_total(
    client: TestClient, admin: dict[str, str], notes: str
) -> None:
    response = client.get(f"{BROWSE}/{notes}", headers=admin)
    assert response.status_code == 206, response.text
    assert response.headers["content-range"] == "0-9/25"
    rows = response.json()
    assert ids(rows) == list(range(25, 15, -1))
    assert rows[0]["title"] == "note 25" and rows[0]["body"] is None and rows[0]["score"] == 0


def test_limit_offset_and_order(client: TestClient, admin: dict[str, str], notes: str) -> None:
    response = client.get(
        f"{BROWSE}/{notes}", params={"limit": "4", "offset": "2", "order": "score.desc,id"}, headers=admin
    )
    assert response.status_code == 206, response.text
    assert response.headers["content-range"] == "2-5/25"
    assert ids(response.json()) == [14, 19, 24, 3]


def test_the_whole_table_in_one_page_is_200(client: TestClient, admin: dict[str, str], notes: str) -> None:
    response = client.get(f"{BROWSE}/{notes}", params={"limit": "100", "order": "id"}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.headers["content-range"] == "0-24/25"
    assert ids(response.json()) == list(range(1, 26))


def test_out_of_range_numbers_are_clamped_as_insforge_does(
    client: TestClient, admin: dict[str, str], notes: str
) -> None:
    zero = client.get(
        f"{BROWSE}/{notes}", params={"limit": "0", "offset": "-5", "order": "id"}, headers=admin
    )
    assert zero.status_code == 206 and zero.headers["content-range"] == "0-0/25"
    assert ids(zero.json()) == [1]
    past = client.get(f"{BROWSE}/{notes}", params={"offset": "100"}, headers=admin)
    assert past.status_code == 206 and past.json() == []
    assert past.headers["content-range"] == "*/25"


def test_search_matches_text_columns_literally(client: TestClient, admin: dict[str, str], notes: str) -> None:
    urgent = client.get(f"{BROWSE}/{notes}", params={"search": "urgent_%", "order": "id"}, headers=admin)
    assert urgent.status_code == 200, urgent.text
    assert ids(urgent.json()) == [3, 6, 9, 12, 15, 18, 21, 24]
    # `_` and `%` are the text's own: "note 1_" matches nothing, though `_` would match any character.
    literal = client.get(f"{BROWSE}/{notes}", params={"search": "note 1_"}, headers=admin)
    assert literal.status_code == 200 and literal.json() == []
    assert literal.headers["content-range"] == "*/0"


def test_oversized_cells_are_guarded(client: TestClient, admin: dict[str, str], new_name: NewName) -> None:
    table = new_name("docs")
    sql(
        client,
        admin,
        f"create table {table} (id int primary key, small text, big text, blob bytea, doc jsonb,"
        f" tags text[]);"
        f" insert into {table} values (1, 'hi', repeat('x', 5000), decode(repeat('ab', 5000), 'hex'),"
        f" jsonb_build_object('k', repeat('y', 5000)), array[repeat('z', 5000)]),"
        f" (2, 'ok', 'short', '\\x01', '{{\"k\": 1}}', array['a'])",
    )
    rows = client.get(f"{BROWSE}/{table}", params={"order": "id"}, headers=admin).json()
    assert rows[0] == {
        "id": 1,
        "small": "hi",
        "big": GUARDED,
        "blob": GUARDED,
        "doc": GUARDED,
        "tags": GUARDED,
    }
    assert rows[1] == {
        "id": 2,
        "small": "ok",
        "big": "short",
        "blob": "\\x01",
        "doc": {"k": 1},
        "tags": ["a"],
    }


def test_a_table_wider_than_fifty_columns(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    table = new_name("wide")
    columns = ", ".join(f"c{n} int default {n}" for n in range(60))
    sql(
        client,
        admin,
        f"create table {table} (id int primary key, {columns}); insert into {table} (id) values (1)",
    )
    rows = client.get(f"{BROWSE}/{table}", headers=admin).json()
    assert rows == [{"id": 1, **{f"c{n}": n for n in range(60)}}]


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"limit": "ten"}, 400, "Invalid numeric query parameter: ten"),
        ({"offset": "x1"}, 400, "Invalid numeric query parameter: x1"),
        # Digits JavaScript's parseInt does not read (Arabic-Indic twelve), as InsForge answers them.
        ({"limit": "\u0661\u0662"}, 400, "Invalid numeric query parameter: \u0661\u0662"),
        ({"order": "nope.asc"}, 400, "Invalid sort column: nope"),
        ({"order": "id.sideways"}, 400, "Invalid sort direction: sideways"),
        ({"order": "id;drop"}, 400, "Invalid column name: 'id;drop'"),
    ],
)
def test_bad_parameters_are_400(
    client: TestClient, admin: dict[str, str], notes: str, params: dict[str, str], status: int, message: str
) -> None:
    response = client.get(f"{BROWSE}/{notes}", params=params, headers=admin)
    assert response.status_code == status, response.text
    assert response.json()["message"] == message
    assert response.json()["statusCode"] == status


def test_unknown_and_invalid_tables(client: TestClient, admin: dict[str, str], new_name: NewName) -> None:
    missing = client.get(f"{BROWSE}/{new_name('absent')}", headers=admin)
    assert missing.status_code == 404 and missing.json()["error"] == "DATABASE_NOT_FOUND"
    invalid = client.get(f"{BROWSE}/bad-name", headers=admin)
    assert invalid.status_code == 400 and invalid.json()["error"] == "DATABASE_INVALID_PARAMETER"


def test_only_admins_browse(
    client: TestClient, admin: dict[str, str], anon: dict[str, str], user: dict[str, str], notes: str
) -> None:
    assert client.get(f"{BROWSE}/{notes}", headers=anon).status_code == 401
    assert client.get(f"{BROWSE}/{notes}", headers=user).status_code == 403
    assert client.get(f"{BROWSE}/{notes}").status_code == 401


def test_agent_keys_need_database_read(client: TestClient, admin: dict[str, str], notes: str) -> None:
    reader = agent_headers(client, admin, ["database:read", "records:read"])
    assert client.get(f"{BROWSE}/{notes}", headers=reader).status_code == 206
    every_read = agent_headers(client, admin, ["*:read"])
    assert client.get(f"{BROWSE}/{notes}", headers=every_read).status_code == 206
    storage_only = agent_headers(client, admin, ["storage:read"])
    refused = client.get(f"{BROWSE}/{notes}", headers=storage_only)
    assert refused.status_code == 403, refused.text


@pytest.mark.parametrize("scopes", [["database:read"], ["database:write"]], ids=["read", "write"])
def test_a_database_scope_alone_does_not_read_rows(
    client: TestClient, admin: dict[str, str], notes: str, scopes: list[str]
) -> None:
    """A page is the table's data, which `database:read` does not reach (its tools show schemas, policies,
    counts and plans; a policy simulation withholds its sample rows from it): an agent key browses only
    when its scopes read rows too (`records:read`). (`database:write` runs SQL, but through the approval
    gate and the audit trail, not a page of rows.)"""
    refused = client.get(f"{BROWSE}/{notes}", headers=agent_headers(client, admin, scopes))
    assert refused.status_code == 403, refused.text
    body = refused.json()
    assert body["error"] == "FORBIDDEN" and "records:read" in body["message"], body
    assert "note 1" not in refused.text


def test_a_number_too_long_to_read_is_clamped_not_a_500(
    client: TestClient, admin: dict[str, str], notes: str
) -> None:
    """Python refuses to read an integer of more than 4,300 digits: such a `limit` or `offset` is clamped as
    any other too large number is, not a server error."""
    digits = "9" * 5000
    far = client.get(f"{BROWSE}/{notes}", params={"offset": digits}, headers=admin)
    assert far.status_code == 206, far.text
    assert far.json() == [] and far.headers["content-range"] == "*/25"
    wide = client.get(f"{BROWSE}/{notes}", params={"limit": digits, "offset": f"-{digits}"}, headers=admin)
    assert wide.status_code == 200, wide.text
    assert len(wide.json()) == 25


def test_a_page_changes_nothing(client: TestClient, admin: dict[str, str], new_name: NewName) -> None:
    """Browsing is a read (`database:read` with `records:read` reaches it): it runs in a read-only
    transaction, so code a cell's value runs on its way to JSON (an app type's cast to json) cannot write, as
    an explained statement or a SELECT simulation cannot."""
    table, mood, seen = new_name("moods"), new_name("mood"), new_name("seen")
    sql(
        client,
        admin,
        f"create type {mood} as enum ('happy'); create table {seen} (at timestamptz);"
        f" create function {mood}_json(v {mood}) returns json language plpgsql as $f$"
        f" begin insert into public.{seen} values (now()); return to_json(v::text); end $f$;"
        f" create cast ({mood} as json) with function {mood}_json({mood});"
        f" create table {table} (id int primary key, m {mood}); insert into {table} values (1, 'happy')",
    )
    reader = agent_headers(client, admin, ["database:read", "records:read"])
    response = client.get(f"{BROWSE}/{table}", headers=reader)
    assert 400 <= response.status_code < 500, response.text
    assert "read-only" in response.json()["message"]
    count = client.post(RAW, json={"query": f"select count(*) as n from {seen}"}, headers=admin)
    assert count.json()["rows"] == [{"n": 0}], count.text
