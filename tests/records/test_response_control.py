"""What PostgREST lets a function decide about its response, and the error headers clients rely on.

`Proxy-Status` on errors, `RAISE SQLSTATE 'PGRST'`, the `response.status` / `response.headers` GUCs,
`max-affected` on function calls, and `nulls=stripped`. Bad input is a clear error that changes nothing.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

RPC = "/api/database/rpc"
RECORDS = "/api/database/records"


@pytest.fixture(scope="module", autouse=True)
def functions(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """
            CREATE TABLE ledger (id serial PRIMARY KEY, note text, extra text);
            GRANT ALL ON ledger TO PUBLIC;
            GRANT ALL ON SEQUENCE ledger_id_seq TO PUBLIC;
            CREATE FUNCTION raise_custom(message text, detail text) RETURNS void LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO ledger (note) VALUES ('raised');
                RAISE SQLSTATE 'PGRST' USING MESSAGE = message, DETAIL = detail;
            END $$;
            CREATE FUNCTION raise_without_detail() RETURNS void LANGUAGE plpgsql AS $$
            BEGIN RAISE SQLSTATE 'PGRST' USING MESSAGE = '{"code":"123","message":"no detail"}'; END $$;
            -- Sets the GUCs, then writes: a bad value must roll the write back.
            CREATE FUNCTION shaped(status text, headers text, note text) RETURNS int LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM set_config('response.status', status, true);
                PERFORM set_config('response.headers', headers, true);
                INSERT INTO ledger (note) VALUES (note);
                RETURN 1;
            END $$;
            CREATE FUNCTION shaped_void(status text) RETURNS void LANGUAGE sql VOLATILE AS
                $$ SELECT set_config('response.status', status, true) $$;
            -- Sets the status on each row it returns: the response must see the last one.
            CREATE FUNCTION shaped_rows(n int) RETURNS SETOF ledger LANGUAGE sql STABLE AS $$
                SELECT l.* FROM generate_series(1, n) AS g(i)
                CROSS JOIN LATERAL (SELECT set_config('response.status', (200 + g.i)::text, true)) AS s
                CROSS JOIN LATERAL (SELECT g.i AS id, 'row' AS note, NULL::text AS extra) AS l
            $$;
            CREATE FUNCTION add_notes(n int) RETURNS SETOF ledger LANGUAGE sql VOLATILE AS
                $$ INSERT INTO ledger (note) SELECT 'bulk' FROM generate_series(1, n) RETURNING * $$;
            CREATE FUNCTION add_counted(n int) RETURNS SETOF ledger LANGUAGE sql VOLATILE AS
                $$ INSERT INTO ledger (note) SELECT 'counted' FROM generate_series(1, n) RETURNING * $$;
            CREATE FUNCTION add_note_ids(n int) RETURNS SETOF int LANGUAGE sql VOLATILE AS
                $$ INSERT INTO ledger (note) SELECT 'bulk-id' FROM generate_series(1, n) RETURNING id $$;
            """
        )


def ledger_count(client: TestClient, admin: dict[str, str], note: str) -> int:
    response = client.get(f"{RECORDS}/ledger?note=eq.{note}&select=id", headers=admin)
    assert response.status_code == 200, response.text
    return len(response.json())


def call(client: TestClient, admin: dict[str, str], name: str, body: Any = None, **headers: str) -> Any:
    return client.post(f"{RPC}/{name}", json=body or {}, headers={**admin, **headers})


# -- Proxy-Status -----------------------------------------------------------------------------------------


def test_every_error_names_its_code_in_proxy_status(client: TestClient, admin: dict[str, str]) -> None:
    missing = client.head(f"{RECORDS}/no_such_table", headers=admin)
    assert missing.status_code == 404
    assert missing.content == b""
    assert missing.headers["proxy-status"] == "PostgREST; error=PGRST205"
    raised = call(client, admin, "fail_with", {"code": "P0001"})
    assert raised.headers["proxy-status"] == "PostgREST; error=P0001"
    ok = client.get(f"{RECORDS}/ledger", headers=admin)
    assert "proxy-status" not in ok.headers


# -- RAISE SQLSTATE 'PGRST' -------------------------------------------------------------------------------


def test_raise_pgrst_sets_status_headers_and_body(client: TestClient, admin: dict[str, str]) -> None:
    message = '{"code":"123","message":"Payment Required","details":"Quota exceeded","hint":"Upgrade"}'
    detail = '{"status":419,"status_text":"Panic","headers":{"X-Powered-By":"Nerd Rage"}}'
    response = call(client, admin, "raise_custom", {"message": message, "detail": detail})
    assert response.status_code == 419
    assert response.headers["x-powered-by"] == "Nerd Rage"
    assert response.headers["proxy-status"] == "PostgREST; error=123"
    assert response.json() == {
        "code": "123",
        "message": "Payment Required",
        "details": "Quota exceeded",
        "hint": "Upgrade",
    }
    assert ledger_count(client, admin, "raised") == 0
    minimal = call(
        client,
        admin,
        "raise_custom",
        {"message": '{"code":"1","message":"m"}', "detail": '{"status":418,"headers":{}}'},
    )
    assert minimal.status_code == 418
    assert minimal.json() == {"code": "1", "message": "m", "details": None, "hint": None}


@pytest.mark.parametrize(
    ("message", "detail", "details"),
    [
        ("not json", '{"status":419,"headers":{}}', "Invalid JSON value for MESSAGE: 'not json'"),
        ('{"message":"no code"}', '{"status":419,"headers":{}}', "Invalid JSON value for MESSAGE: "),
        ('{"code":"1","message":"m"}', "{bad", "Invalid JSON value for DETAIL: '{bad'"),
        ('{"code":"1","message":"m"}', '{"status":"419","headers":{}}', "Invalid JSON value for DETAIL: "),
        ('{"code":"1","message":"m"}', '{"status":419}', "Invalid JSON value for DETAIL: "),
        (
            '{"code":"1","message":"m"}',
            '{"status":419,"headers":{"X-A":"a\\r\\nb"}}',
            "Invalid JSON value for DETAIL: ",
        ),
        ('{"code":"1","message":"m"}', '{"status":4190,"headers":{}}', "Invalid JSON value for DETAIL: "),
    ],
)
def test_raise_pgrst_with_bad_json_is_pgrst121(
    client: TestClient, admin: dict[str, str], message: str, detail: str, details: str
) -> None:
    response = call(client, admin, "raise_custom", {"message": message, "detail": detail})
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "PGRST121"
    assert body["message"] == "Could not parse JSON in the RAISE SQLSTATE 'PGRST' error"
    assert body["details"].startswith(details)
    assert response.headers["proxy-status"] == "PostgREST; error=PGRST121"
    assert ledger_count(client, admin, "raised") == 0


def test_raise_pgrst_without_detail_is_pgrst121(client: TestClient, admin: dict[str, str]) -> None:
    response = call(client, admin, "raise_without_detail")
    assert response.status_code == 500
    assert response.json()["details"] == "DETAIL is missing in the RAISE statement"


def test_raise_pt_status_still_works(client: TestClient, admin: dict[str, str]) -> None:
    response = call(client, admin, "fail_with", {"code": "PT402"})
    assert response.status_code == 402
    assert response.headers["proxy-status"] == "PostgREST; error=PT402"


# -- response GUCs ----------------------------------------------------------------------------------------


def test_response_gucs_set_status_and_headers(client: TestClient, admin: dict[str, str]) -> None:
    headers = '[{"X-Custom": "v"}, {"Cache-Control": "no-store"}]'
    response = call(client, admin, "shaped", {"status": "201", "headers": headers, "note": "guc-ok"})
    assert response.status_code == 201
    assert response.json() == 1
    assert response.headers["x-custom"] == "v"
    assert response.headers["cache-control"] == "no-store"
    assert ledger_count(client, admin, "guc-ok") == 1
    # The same request shape again: the cached statement still reads the GUCs.
    again = call(client, admin, "shaped", {"status": "202", "headers": "[]", "note": "guc-ok"})
    assert again.status_code == 202
    assert "x-custom" not in again.headers


def test_response_gucs_are_read_after_every_row_of_the_call(
    client: TestClient, admin: dict[str, str]
) -> None:
    """The function sets the status on each of its rows; the response sees the last row's value, so the
    GUCs were read after the whole call (also through filters, a count and a planned count)."""
    response = client.get(f"{RPC}/shaped_rows?n=3&select=id&order=id.desc", headers=admin)
    assert response.status_code == 203
    assert response.json() == [{"id": 3}, {"id": 2}, {"id": 1}]
    counted = client.get(f"{RPC}/shaped_rows?n=4&select=id", headers={**admin, "Prefer": "count=exact"})
    assert counted.status_code == 204  # a status the function chose: no body, as for any 204
    planned = client.get(f"{RPC}/shaped_rows?n=5&select=id", headers={**admin, "Prefer": "count=planned"})
    assert planned.status_code == 205


def test_response_status_on_a_void_function(client: TestClient, admin: dict[str, str]) -> None:
    assert call(client, admin, "shaped_void", {"status": "202"}).status_code == 202
    assert call(client, admin, "shaped_void", {"status": "nope"}).json()["code"] == "PGRST112"


def test_table_reads_ignore_response_gucs(client: TestClient, admin: dict[str, str]) -> None:
    response = client.get(f"{RECORDS}/ledger?select=id&limit=1", headers=admin)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("status", "headers", "code"),
    [
        ("abc", "[]", "PGRST112"),
        ("99", "[]", "PGRST112"),
        ("201", "not json", "PGRST111"),
        ("201", '{"X-A": "b"}', "PGRST111"),
        ("201", '[{"X-A": "b", "X-B": "c"}]', "PGRST111"),
        ("201", '[{"X-A": 1}]', "PGRST111"),
        ("201", '[{"X-A": "a\\r\\nSet-Cookie: x"}]', "PGRST111"),
    ],
)
def test_bad_response_gucs_are_500_and_roll_back(
    client: TestClient, admin: dict[str, str], status: str, headers: str, code: str
) -> None:
    response = call(client, admin, "shaped", {"status": status, "headers": headers, "note": "guc-bad"})
    assert response.status_code == 500
    assert response.json()["code"] == code
    assert response.headers["proxy-status"] == f"PostgREST; error={code}"
    assert ledger_count(client, admin, "guc-bad") == 0


# -- max-affected on function calls ----------------------------------------------------------------------


def test_max_affected_on_a_set_returning_call(client: TestClient, admin: dict[str, str]) -> None:
    strict = {"Prefer": "handling=strict, max-affected=3"}
    over = call(client, admin, "add_notes", {"n": 5}, **strict)
    assert over.status_code == 400
    assert over.json() == {
        "code": "PGRST124",
        "message": "Query result exceeds max-affected preference constraint",
        "details": "The query affects 5 rows",
        "hint": None,
    }
    assert ledger_count(client, admin, "bulk") == 0
    scalars = call(client, admin, "add_note_ids", {"n": 4}, **strict)
    assert scalars.json()["code"] == "PGRST124"
    assert ledger_count(client, admin, "bulk-id") == 0
    within = call(client, admin, "add_notes", {"n": 3}, **strict)
    assert within.status_code == 200
    assert len(within.json()) == 3
    lenient = call(client, admin, "add_notes", {"n": 5}, Prefer="max-affected=3")
    assert lenient.status_code == 200
    assert ledger_count(client, admin, "bulk") == 8


def test_max_affected_on_a_single_value_call_is_pgrst128(client: TestClient, admin: dict[str, str]) -> None:
    response = call(
        client,
        admin,
        "shaped",
        {"status": "200", "headers": "[]", "note": "single"},
        Prefer="handling=strict, max-affected=1",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "PGRST128"
    assert ledger_count(client, admin, "single") == 0


# -- nulls=stripped --------------------------------------------------------------------------------------


def test_nulls_stripped_drops_null_keys_from_every_object(client: TestClient, admin: dict[str, str]) -> None:
    stripped = "application/vnd.pgrst.array+json;nulls=stripped"
    response = client.get(
        f"{RPC}/shaped_rows?n=2&select=id,note,extra,nested:extra", headers={**admin, "Accept": stripped}
    )
    assert response.status_code == 202
    assert response.json() == [{"id": 1, "note": "row"}, {"id": 2, "note": "row"}]
    assert response.headers["content-type"].startswith(stripped)
    written = client.post(
        f"{RECORDS}/ledger?select=note,extra",
        json=[{"note": "stripped"}, {"note": "stripped", "extra": "x"}],
        headers={**admin, "Accept": stripped, "Prefer": "return=representation"},
    )
    assert written.json() == [{"note": "stripped"}, {"note": "stripped", "extra": "x"}]
    plain = client.get(f"{RECORDS}/ledger?note=eq.stripped&select=extra&order=id", headers=admin)
    assert plain.json() == [{"extra": None}, {"extra": "x"}]


# -- a function read twice runs once ----------------------------------------------------------------------


def test_a_counted_call_runs_the_function_once(client: TestClient, admin: dict[str, str]) -> None:
    """`count=exact` reads a set-returning function for the page and for the count; its writes happen once."""
    before = ledger_count(client, admin, "counted")
    for count in ("exact", "estimated"):
        answer = call(client, admin, "add_counted", {"n": 3}, Prefer=f"count={count}")
        assert answer.status_code == 200, answer.text
        assert len(answer.json()) == 3 and answer.headers["content-range"] == "0-2/3"
    assert ledger_count(client, admin, "counted") == before + 6
    limited = client.post(
        f"{RPC}/add_counted?limit=1", json={"n": 2}, headers={**admin, "Prefer": "count=exact"}
    )
    assert limited.status_code == 206 and limited.headers["content-range"] == "0-0/2"
    assert ledger_count(client, admin, "counted") == before + 8
