"""PostgREST's function calls, from its documentation and `RpcSpec`: a single unnamed parameter takes the
whole body (json/jsonb, text, xml, bytea by Content-Type), overloads are resolved as `findProc` resolves
them (300 PGRST203 listing the candidates, 404 PGRST202 saying what was searched for), and
`Prefer: count=exact` counts what a function returns, a single value as one row.
"""

from __future__ import annotations

import psycopg
import pytest
from starlette.testclient import TestClient

RPC = "/api/database/rpc"
JSON_HEADERS = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def has_libxml(database_url: str) -> bool:
    """Whether this Postgres parses XML at all (a build without libxml refuses every xml value, 0A000)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        try:
            conn.execute("SELECT '<a/>'::xml")
        except psycopg.errors.FeatureNotSupported:
            return False
    return True


@pytest.fixture(scope="module", autouse=True)
def functions(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """
            CREATE FUNCTION unnamed_json_param(json) RETURNS json LANGUAGE sql AS 'SELECT $1';
            CREATE FUNCTION unnamed_jsonb_param(jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT $1';
            CREATE FUNCTION named_json_param(data json) RETURNS json LANGUAGE sql AS 'SELECT data';
            CREATE FUNCTION unnamed_text_param(text) RETURNS text LANGUAGE sql AS 'SELECT $1';
            CREATE FUNCTION unnamed_xml_param(xml) RETURNS text LANGUAGE sql AS 'SELECT $1::text';
            CREATE FUNCTION unnamed_bytea_param(bytea) RETURNS text LANGUAGE sql
              AS 'SELECT encode($1, ''hex'')';
            CREATE FUNCTION unnamed_int_param(int) RETURNS int LANGUAGE sql AS 'SELECT $1';
            CREATE FUNCTION overloaded_unnamed_param(json) RETURNS json LANGUAGE sql AS 'SELECT $1';
            CREATE FUNCTION overloaded_unnamed_param(bytea) RETURNS text LANGUAGE sql
              AS 'SELECT encode($1, ''hex'')';
            CREATE FUNCTION overloaded_unnamed_param(text) RETURNS text LANGUAGE sql AS 'SELECT $1';
            CREATE FUNCTION overloaded_unnamed_param() RETURNS int LANGUAGE sql AS 'SELECT 1';
            CREATE FUNCTION overloaded_unnamed_param(x int, y int) RETURNS int LANGUAGE sql
              AS 'SELECT x + y';
            CREATE FUNCTION overloaded_unnamed_json_jsonb_param(json) RETURNS json LANGUAGE sql
              AS 'SELECT $1';
            CREATE FUNCTION overloaded_unnamed_json_jsonb_param(jsonb) RETURNS jsonb LANGUAGE sql
              AS 'SELECT $1';
            CREATE FUNCTION overloaded_unnamed_json_jsonb_param(x int, y int) RETURNS int LANGUAGE sql
              AS 'SELECT x + y';
            CREATE FUNCTION same_names(a int) RETURNS int LANGUAGE sql AS 'SELECT a';
            CREATE FUNCTION same_names(a text) RETURNS text LANGUAGE sql AS 'SELECT a';
            CREATE FUNCTION add_them(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT a + b';
            CREATE FUNCTION sayhello(name text) RETURNS text LANGUAGE sql AS $$ SELECT 'Hello, ' || name $$;
            CREATE FUNCTION overloaded() RETURNS SETOF int LANGUAGE sql AS 'VALUES (1), (2), (3)';
            CREATE FUNCTION overloaded(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT a + b';
            CREATE FUNCTION overloaded(a text, b text, c text) RETURNS text LANGUAGE sql
              AS 'SELECT a || b || c';
            CREATE FUNCTION three_words() RETURNS SETOF text LANGUAGE sql
              AS 'SELECT unnest(ARRAY[''a'', ''b'', ''c''])';
            CREATE FUNCTION no_words() RETURNS SETOF text LANGUAGE sql AS 'SELECT NULL::text WHERE false';
            """
        )


def test_unnamed_json_parameter_takes_the_whole_body(client: TestClient, admin: dict[str, str]) -> None:
    for name in ("unnamed_json_param", "unnamed_jsonb_param"):
        response = client.post(f"{RPC}/{name}", headers=admin, content=b'{"A": 1, "B": 2, "C": 3}')
        assert response.status_code == 200, response.text
        assert response.json() == {"A": 1, "B": 2, "C": 3}
    array = client.post(f"{RPC}/unnamed_json_param", headers=admin, json=[1, "two"])
    assert array.json() == [1, "two"]


def test_an_object_with_the_empty_name_is_the_unnamed_parameters_body(
    client: TestClient, admin: dict[str, str]
) -> None:
    """`{"": v}` names the unnamed parameter, and PostgREST passes it the body (the object) itself."""
    response = client.post(f"{RPC}/unnamed_jsonb_param", headers=admin, json={"": 5})
    assert response.status_code == 200, response.text
    assert response.json() == {"": 5}


def test_a_named_json_parameter_does_not_take_the_whole_body(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.post(f"{RPC}/named_json_param", headers=admin, json={"A": 1, "B": 2, "C": 3})
    assert response.status_code == 404
    assert response.json() == {
        "code": "PGRST202",
        "message": "Could not find the function public.named_json_param(A, B, C) in the schema cache",
        "details": "Searched for the function public.named_json_param with parameters A, B, C or with a"
        " single unnamed json/jsonb parameter, but no matches were found in the schema cache.",
        "hint": None,
    }


@pytest.mark.parametrize(
    ("name", "content_type", "body", "expected"),
    [
        ("unnamed_text_param", "text/plain", b"unnamed text arg", "unnamed text arg"),
        (
            "unnamed_xml_param",
            "text/xml",
            b"<note><from>John</from><to>Jane</to></note>",
            "<note><from>John</from><to>Jane</to></note>",
        ),
        ("unnamed_bytea_param", "application/octet-stream", b"\x89PNG\x00\xff", "89504e4700ff"),
    ],
)
def test_raw_bodies_go_to_a_single_unnamed_parameter_of_their_type(
    client: TestClient,
    admin: dict[str, str],
    has_libxml: bool,
    name: str,
    content_type: str,
    body: bytes,
    expected: str,
) -> None:
    response = client.post(f"{RPC}/{name}", headers={**admin, "Content-Type": content_type}, content=body)
    if name == "unnamed_xml_param" and not has_libxml:
        # The body reached the function's xml parameter, which this Postgres cannot parse.
        assert (response.status_code, response.json()["code"]) == (400, "0A000")
        return
    assert response.status_code == 200, response.text
    assert response.json() == expected


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [("text/plain", "text"), ("text/xml", "xml"), ("application/octet-stream", "bytea")],
)
def test_a_raw_body_finds_no_function_of_another_type(
    client: TestClient, admin: dict[str, str], content_type: str, kind: str
) -> None:
    response = client.post(
        f"{RPC}/unnamed_int_param", headers={**admin, "Content-Type": content_type}, content=b"a simple text"
    )
    assert response.status_code == 404
    assert response.json() == {
        "code": "PGRST202",
        "message": "Could not find the function public.unnamed_int_param in the schema cache",
        "details": "Searched for the function public.unnamed_int_param with a single unnamed"
        f" {kind} parameter, but no matches were found in the schema cache.",
        "hint": None,
    }


def test_a_json_body_finds_no_unnamed_int_parameter(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(f"{RPC}/unnamed_int_param", headers=admin, json={"x": 1, "y": 2})
    assert response.status_code == 404
    assert response.json()["message"] == (
        "Could not find the function public.unnamed_int_param(x, y) in the schema cache"
    )


def test_overloads_with_an_unnamed_parameter(client: TestClient, admin: dict[str, str]) -> None:
    url = f"{RPC}/overloaded_unnamed_param"
    assert client.post(url, headers=admin, json={}).json() == 1
    assert client.post(url, headers=admin, json={"x": 1, "y": 2}).json() == 3
    assert client.post(url, headers=admin, json={"A": 1, "B": 2, "C": 3}).json() == {"A": 1, "B": 2, "C": 3}
    text = client.post(url, headers={**admin, "Content-Type": "text/plain"}, content=b"unnamed text arg")
    assert text.json() == "unnamed text arg"
    raw = client.post(url, headers={**admin, "Content-Type": "application/octet-stream"}, content=b"\x01\x02")
    assert raw.json() == "0102"
    # GET never passes a body: the overload without parameters, whatever the Content-Type says.
    got = client.get(url, headers={**admin, "Content-Type": "text/plain"})
    assert (got.status_code, got.json()) == (200, 1)


def test_an_unsupported_content_type_falls_back_to_nothing(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        f"{RPC}/overloaded_unnamed_param",
        headers={**admin, "Content-Type": "text/csv"},
        content=b"a,b\n1,2\n4,6\n100,200",
    )
    assert response.status_code == 404
    assert response.json()["message"] == (
        "Could not find the function public.overloaded_unnamed_param(a, b) in the schema cache"
    )
    assert response.json()["details"] == (
        "Searched for the function public.overloaded_unnamed_param with parameters a, b, but no matches were"
        " found in the schema cache."
    )


def test_a_csv_body_with_a_line_longer_than_its_header_is_refused(
    client: TestClient, admin: dict[str, str]
) -> None:
    """Its extra field was keyed by None, which no JSON object holds: a 500."""
    response = client.post(
        f"{RPC}/overloaded_unnamed_param",
        headers={**admin, "Content-Type": "text/csv"},
        content=b"x,y\n1,2,3\n",
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "PGRST102"
    assert response.json()["message"] == "All lines must have same number of fields"


def test_two_unnamed_json_overloads_are_300_with_the_candidates(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.post(
        f"{RPC}/overloaded_unnamed_json_jsonb_param", headers=admin, json={"A": 1, "B": 2, "C": 3}
    )
    assert response.status_code == 300
    assert response.json() == {
        "code": "PGRST203",
        "message": "Could not choose the best candidate function between: "
        "public.overloaded_unnamed_json_jsonb_param( => json), "
        "public.overloaded_unnamed_json_jsonb_param( => jsonb)",
        "details": None,
        "hint": "Try renaming the parameters or the function itself in the database so function overloading "
        "can be resolved",
    }
    assert response.headers["proxy-status"] == "PostgREST; error=PGRST203"


def test_overloads_differing_only_in_types_are_300_not_postgres_42725(
    client: TestClient, admin: dict[str, str]
) -> None:
    for response in (
        client.post(f"{RPC}/same_names", headers=admin, json={"a": 1}),
        client.get(f"{RPC}/same_names?a=1", headers=admin),
    ):
        assert response.status_code == 300, response.text
        assert response.json()["message"] == (
            "Could not choose the best candidate function between: "
            "public.same_names(a => integer), public.same_names(a => text)"
        )


def test_invalid_xml_is_postgres_own_400(client: TestClient, admin: dict[str, str], has_libxml: bool) -> None:
    if not has_libxml:
        pytest.skip("this Postgres is built without libxml")
    response = client.post(
        f"{RPC}/unnamed_xml_param", headers={**admin, "Content-Type": "text/xml"}, content=b"<"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "2200N"
    assert response.json()["message"] == "invalid XML content"


def test_exact_count_of_a_single_value_is_one(client: TestClient, admin: dict[str, str]) -> None:
    response = client.get(f"{RPC}/add_them?a=3&b=4", headers={**admin, "Prefer": "count=exact"})
    assert (response.status_code, response.json()) == (200, 7)
    assert response.headers["content-range"] == "0-0/1"
    plain = client.get(f"{RPC}/add_them?a=3&b=4", headers=admin)
    assert plain.headers["content-range"] == "0-0/*"


def test_exact_count_of_a_set_of_values(client: TestClient, admin: dict[str, str]) -> None:
    counted = client.get(f"{RPC}/three_words", headers={**admin, "Prefer": "count=exact"})
    assert (counted.status_code, counted.json()) == (200, ["a", "b", "c"])
    assert counted.headers["content-range"] == "0-2/3"
    assert counted.headers["preference-applied"] == "count=exact"
    uncounted = client.post(f"{RPC}/three_words", headers=admin, json={})
    assert uncounted.headers["content-range"] == "0-2/*"
    empty = client.get(f"{RPC}/no_words", headers={**admin, "Prefer": "count=exact"})
    assert (empty.json(), empty.headers["content-range"]) == ([], "*/0")


@pytest.mark.parametrize(
    ("query", "message", "details", "hint"),
    [
        (
            "sayhell",
            "Could not find the function public.sayhell without parameters in the schema cache",
            "Searched for the function public.sayhell without parameters, but no matches were found in the"
            " schema cache.",
            "Perhaps you meant to call the function public.sayhello",
        ),
        (
            "sayhello?nam=Peter",
            "Could not find the function public.sayhello(nam) in the schema cache",
            "Searched for the function public.sayhello with parameter nam, but no matches were found in the"
            " schema cache.",
            "Perhaps you meant to call the function public.sayhello(name)",
        ),
        (
            "add_them?a=1&b=2&smthelse=blabla",
            "Could not find the function public.add_them(a, b, smthelse) in the schema cache",
            "Searched for the function public.add_them with parameters a, b, smthelse, but no matches were"
            " found in the schema cache.",
            "Perhaps you meant to call the function public.add_them(a, b)",
        ),
        (
            "overloaded?wrong_arg=value",
            "Could not find the function public.overloaded(wrong_arg) in the schema cache",
            "Searched for the function public.overloaded with parameter wrong_arg, but no matches were found"
            " in the schema cache.",
            None,
        ),
        (
            "overloaded?a=1&b=2&wrong_arg=value",
            "Could not find the function public.overloaded(a, b, wrong_arg) in the schema cache",
            "Searched for the function public.overloaded with parameters a, b, wrong_arg, but no matches were"
            " found in the schema cache.",
            "Perhaps you meant to call the function public.overloaded(a, b, c)",
        ),
    ],
)
def test_an_unknown_call_hints_at_the_closest_function(
    client: TestClient, admin: dict[str, str], query: str, message: str, details: str, hint: str | None
) -> None:
    """A GET's query parameters that are not filters are the call's arguments, all of them (RpcSpec)."""
    response = client.get(f"{RPC}/{query}", headers=admin)
    assert response.status_code == 404
    assert response.json() == {"code": "PGRST202", "message": message, "details": details, "hint": hint}


def test_get_arguments_and_filters(client: TestClient, admin: dict[str, str]) -> None:
    assert client.get(f"{RPC}/sayhello?name=Peter", headers=admin).json() == "Hello, Peter"
    # A value that reads as a filter filters what the function returns (here: a set of integers).
    assert client.get(f"{RPC}/overloaded", headers=admin).json() == [1, 2, 3]
    assert client.get(f"{RPC}/overloaded?a=1&b=2", headers=admin).json() == 3


def test_a_json_body_hints_at_a_similar_function(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(f"{RPC}/unnamed_int_param", headers=admin, json={"x": 1, "y": 2})
    assert response.json()["hint"] == "Perhaps you meant to call the function public.unnamed_text_param"


def test_a_function_raising_a_connection_sqlstate_answers_with_its_own_error(
    client: TestClient, admin: dict[str, str], database_url: str
) -> None:
    """As PostgREST: class 08 is a 503, with the function's SQLSTATE and message (say, dblink's remote server
    gone), not PGRST000, which says Kilnbase's own connection to the database is lost."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION remote_gone() RETURNS int LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'could not reach the remote server' USING ERRCODE = '08006'; END $$"
        )
    response = client.post(f"{RPC}/remote_gone", headers={**admin, **JSON_HEADERS}, content="{}")
    assert response.status_code == 503, response.text
    body = response.json()
    assert (body["code"], body["message"]) == ("08006", "could not reach the remote server")


@pytest.mark.parametrize(
    ("sqlstate", "status"),
    [
        ("53100", 503),  # disk_full: insufficient resources
        ("53200", 503),  # out_of_memory
        ("53400", 500),  # configuration_limit_exceeded, the one code of class 53 that is not
        ("54001", 500),  # statement_too_complex
        ("55P03", 500),  # lock_not_available
        ("57000", 500),  # operator_intervention
        ("57P01", 503),  # admin_shutdown, raised by a statement: the session goes on
        ("58030", 500),  # io_error
        ("XX000", 500),  # internal_error
        ("XX001", 500),  # data_corrupted
        ("40001", 500),  # serialization_failure
        ("42P17", 500),  # infinite recursion (in a policy)
        ("P0002", 500),  # no_data_found: a PL/pgSQL error other than RAISE's default
        ("PTABC", 500),  # RAISE SQLSTATE 'PT...' without a status
    ],
)
def test_server_side_sqlstates_get_postgrests_status_and_body(
    client: TestClient, admin: dict[str, str], sqlstate: str, status: int
) -> None:
    """PostgREST's table (errors.rst, `mapSQLtoHTTP`): a failure on the server's side is a 5xx, with the
    same body PostgREST shows (code, message, details, hint), and no `Retry-After`: the database is there."""
    response = client.post(f"{RPC}/fail_with", json={"code": sqlstate}, headers=admin)
    assert response.status_code == status, response.text
    body = {"code": sqlstate, "message": "custom failure", "details": None, "hint": "a hint"}
    assert response.json() == body
    assert "retry-after" not in response.headers
    assert response.headers["proxy-status"] == f"PostgREST; error={sqlstate}"
