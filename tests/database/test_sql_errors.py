"""Raw SQL and migration mistakes are the caller's, said plainly: a parameter count that does not match is a
400 with Postgres's message (not "database unavailable"), a syntax error is a 400 with Postgres's message and
where it is (not the guard's 403), and the migration dry run refuses a version or name that applying would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

RAW = "/api/database/advance/rawsql"
MIGRATIONS = "/api/database/migrations"


def error_of(response: Any) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["error"], body["message"]


@pytest.mark.parametrize("path", [RAW, f"{RAW}/unrestricted"])
def test_too_few_params_is_a_400_with_postgres_message(
    client: TestClient, admin: dict[str, str], path: str
) -> None:
    response = client.post(
        path, json={"query": "select $1::int + $2::int as n", "params": [1]}, headers=admin
    )
    assert error_of(response) == (
        400,
        "DATABASE_INVALID_PARAMETER",
        'bind message supplies 1 parameters, but prepared statement "" requires 2',
    )
    assert "$n" in response.json()["nextActions"]
    # The connection it ran on is fine for the next request.
    again = client.post(
        path, json={"query": "select $1::int + $2::int as n", "params": [1, 2]}, headers=admin
    )
    assert again.json()["rows"] == [{"n": 3}]


@pytest.mark.parametrize("path", [RAW, f"{RAW}/unrestricted"])
def test_a_syntax_error_is_a_400_with_postgres_message_and_position(
    client: TestClient, admin: dict[str, str], path: str
) -> None:
    response = client.post(path, json={"query": "select 1;\nselec 2"}, headers=admin)
    assert error_of(response) == (400, "DATABASE_VALIDATION_ERROR", 'syntax error at or near "selec"')
    assert "position 11 (line 2, column 1)" in response.json()["nextActions"]
    unfinished = client.post(path, json={"query": "select (1"}, headers=admin)
    assert error_of(unfinished) == (400, "DATABASE_VALIDATION_ERROR", "syntax error at end of input")
    assert "position 10" in unfinished.json()["nextActions"]
    accented = client.post(path, json={"query": "select 'é' frm t"}, headers=admin)
    assert error_of(accented)[2] == 'syntax error at or near "t"'
    assert "position 16" in accented.json()["nextActions"]


def test_a_refused_statement_is_still_a_403(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(RAW, json={"query": "reset role"}, headers=admin)
    assert response.status_code == 403


def test_migration_syntax_errors_say_where(
    client: TestClient, admin: dict[str, str], new_version: Callable[[], str]
) -> None:
    body = {"version": new_version(), "name": "broken", "sql": "create tabel x (id int)"}
    response = client.post(MIGRATIONS, json=body, headers=admin)
    assert error_of(response) == (400, "DATABASE_VALIDATION_ERROR", 'syntax error at or near "tabel"')
    assert "position 8" in response.json()["nextActions"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "Add Posts"}, "Use lowercase letters, numbers, and hyphens only."),
        ({"name": "  "}, "Migration name is required"),
        ({"name": 7}, "Migration name is required"),
        (
            {"version": "v1"},
            "Migration version must be a numeric string of at most 20 digits (e.g. 0001 or 20260418091500).",
        ),
    ],
)
def test_the_dry_run_refuses_what_applying_would(
    client: TestClient,
    admin: dict[str, str],
    new_version: Callable[[], str],
    fields: dict[str, Any],
    message: str,
) -> None:
    body = {"version": new_version(), "name": "add-posts", "sql": "select 1", **fields}
    applied = client.post(MIGRATIONS, json=body, headers=admin)
    dry = client.post(f"{MIGRATIONS}/dry-run", json=body, headers=admin)
    assert error_of(applied) == error_of(dry) == (400, "INVALID_INPUT", message)


def test_the_dry_run_takes_what_applying_takes(
    client: TestClient, admin: dict[str, str], new_version: Callable[[], str]
) -> None:
    body = {"version": new_version(), "name": "add-posts-2", "sql": "select 1"}
    dry = client.post(f"{MIGRATIONS}/dry-run", json=body, headers=admin)
    assert (dry.status_code, dry.json()["valid"]) == (200, True)
    only_sql = client.post(f"{MIGRATIONS}/dry-run", json={"sql": "select 1"}, headers=admin)
    assert (only_sql.status_code, only_sql.json()["valid"]) == (200, True)
    assert client.post(MIGRATIONS, json=body, headers=admin).status_code == 201


@pytest.mark.parametrize("path", [RAW, f"{RAW}/unrestricted"])
def test_more_params_than_postgres_takes_is_a_400_not_an_outage(
    client: TestClient, admin: dict[str, str], path: str
) -> None:
    """libpq refuses more than 65535 values before sending anything (no SQLSTATE): the request's mistake."""
    response = client.post(path, json={"query": "select $1::int as n", "params": [1] * 65536}, headers=admin)
    status, error, message = error_of(response)
    assert (status, error) == (400, "INVALID_INPUT"), response.text
    assert "65535" in message
    assert "retry-after" not in response.headers


def _raising(sqlstate: str) -> str:
    return (
        "do $$ begin raise exception 'custom failure' using errcode = '"
        + sqlstate
        + "', detail = 'in /var/lib/postgresql/base/16384/2619', hint = 'internal hint'; end $$"
    )


@pytest.mark.parametrize(
    ("sqlstate", "status", "error"),
    [
        ("53100", 503, "DATABASE_INTERNAL_ERROR"),  # disk_full: insufficient resources
        ("53300", 503, "DATABASE_INTERNAL_ERROR"),  # too_many_connections
        ("53400", 500, "DATABASE_INTERNAL_ERROR"),  # configuration_limit_exceeded
        ("08006", 503, "DATABASE_INTERNAL_ERROR"),  # a connection's failure, raised by a statement
        ("57P01", 503, "DATABASE_INTERNAL_ERROR"),  # admin_shutdown, likewise (the session goes on)
        ("57000", 500, "DATABASE_INTERNAL_ERROR"),  # operator_intervention
        ("57P04", 500, "DATABASE_INTERNAL_ERROR"),  # database_dropped
        ("58030", 500, "DATABASE_INTERNAL_ERROR"),  # io_error
        ("XX000", 500, "DATABASE_INTERNAL_ERROR"),  # internal_error
        ("XX002", 500, "DATABASE_INTERNAL_ERROR"),  # index_corrupted
        # Kept: a statement timeout is the statement's (docs/database.md), and so is an error of the
        # PL/pgSQL the admin sent.
        ("57014", 400, "DATABASE_VALIDATION_ERROR"),
        ("P0002", 400, "DATABASE_VALIDATION_ERROR"),
    ],
)
@pytest.mark.parametrize("path", [RAW, f"{RAW}/unrestricted"])
def test_server_side_sqlstates_follow_postgrests_status(
    client: TestClient, admin: dict[str, str], path: str, sqlstate: str, status: int, error: str
) -> None:
    """PostgREST's table for the classes that say the server failed (53 insufficient resources: 503;
    57 operator intervention, 58 system, XX internal: 500), with Postgres's message as PostgREST shows it,
    and none of its detail, which can name the server's files. The database is there: no Retry-After."""
    response = client.post(path, json={"query": _raising(sqlstate)}, headers=admin)
    assert error_of(response) == (status, error, "custom failure")
    assert "retry-after" not in response.headers
    assert "/var/lib" not in response.text
    if status >= 500:
        assert "internal hint" not in response.text
        assert response.json()["nextActions"]
    # The connection it ran on is fine for the next request.
    assert client.post(path, json={"query": "select 1 as n"}, headers=admin).json()["rows"] == [{"n": 1}]


def test_a_file_the_server_cannot_read_is_a_500_with_postgres_message(
    client: TestClient, admin: dict[str, str]
) -> None:
    """A real class 58 error (58P01, undefined_file), from owner-level SQL."""
    query = "select pg_read_file('kilnbase-no-such-file')"
    response = client.post(f"{RAW}/unrestricted", json={"query": query}, headers=admin)
    status, error, message = error_of(response)
    assert (status, error) == (500, "DATABASE_INTERNAL_ERROR"), response.text
    assert message.startswith('could not open file "kilnbase-no-such-file"'), message
