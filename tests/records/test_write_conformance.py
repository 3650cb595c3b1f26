"""PostgREST writes: insert (single, bulk, CSV), upsert, PUT, PATCH, DELETE, Prefer options, errors.

Each test starts from an empty `notes` table and creates the rows it reads, so any order will do.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

RECORDS = "/api/database/records"


@pytest.fixture(scope="module", autouse=True)
def notes_table(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """
            CREATE TABLE notes (
                id serial PRIMARY KEY,
                slug text UNIQUE,
                title text NOT NULL DEFAULT 'untitled',
                score int,
                done boolean DEFAULT false,
                due date,
                extra jsonb
            )
            """
        )


@pytest.fixture(autouse=True)
def empty_notes(notes_table: None, database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE notes RESTART IDENTITY")


def write(
    client: TestClient, method: str, query: str, headers: dict[str, str], body: Any = None, **extra: str
) -> Any:
    return client.request(method, f"{RECORDS}/{query}", headers={**headers, **extra}, json=body)


def rows(client: TestClient, headers: dict[str, str], query: str) -> list[dict[str, Any]]:
    response = client.get(f"{RECORDS}/{query}", headers=headers)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


def test_insert_minimal_answers_201_with_an_empty_array(client: TestClient, admin: dict[str, str]) -> None:
    response = write(client, "POST", "notes", admin, {"slug": "a", "title": "first"})
    assert response.status_code == 201
    assert response.json() == []
    assert response.headers["content-range"] == "*/*"
    assert rows(client, admin, "notes?slug=eq.a&select=title,done") == [{"title": "first", "done": False}]


def test_insert_representation_with_select_and_embedless_columns(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = write(
        client,
        "POST",
        "notes?select=slug,score",
        admin,
        {"slug": "b", "score": 3},
        Prefer="return=representation",
    )
    assert response.status_code == 201
    assert response.json() == [{"slug": "b", "score": 3}]
    assert response.headers["preference-applied"] == "return=representation"


def test_bulk_insert_is_one_statement(client: TestClient, admin: dict[str, str]) -> None:
    body = [{"slug": f"bulk{i}", "score": i} for i in range(50)]
    response = write(
        client, "POST", "notes?select=slug", admin, body, Prefer="return=representation,count=exact"
    )
    assert response.status_code == 201
    assert len(response.json()) == 50
    assert response.headers["content-range"] == "*/50"


def test_bulk_insert_failure_inserts_nothing(client: TestClient, admin: dict[str, str]) -> None:
    assert write(client, "POST", "notes", admin, {"slug": "a"}).status_code == 201
    body = [{"slug": "ok-1"}, {"slug": "a"}]
    response = write(client, "POST", "notes", admin, body)
    assert response.status_code == 409
    assert response.json()["code"] == "23505"
    assert rows(client, admin, "notes?select=slug") == [{"slug": "a"}]


def test_missing_default_uses_column_defaults(client: TestClient, admin: dict[str, str]) -> None:
    body = [{"slug": "m1", "title": "given"}, {"slug": "m2"}]
    nulls = write(client, "POST", "notes", admin, body)
    assert nulls.status_code == 400  # title is NOT NULL, and the missing key means null
    assert nulls.json()["code"] == "23502"
    response = write(
        client,
        "POST",
        "notes?select=slug,title",
        admin,
        body,
        Prefer="missing=default, return=representation",
    )
    assert response.status_code == 201, response.text
    assert response.json() == [{"slug": "m1", "title": "given"}, {"slug": "m2", "title": "untitled"}]
    assert "missing=default" in response.headers["preference-applied"]


def test_empty_strings_for_non_text_columns_are_dropped(client: TestClient, admin: dict[str, str]) -> None:
    body = {"slug": "quirk", "title": "", "score": "", "due": "", "done": ""}
    response = write(
        client, "POST", "notes?select=title,score,due,done", admin, body, Prefer="return=representation"
    )
    assert response.status_code == 201, response.text
    assert response.json() == [{"title": "", "score": None, "due": None, "done": False}]


def test_columns_parameter_limits_the_payload(client: TestClient, admin: dict[str, str]) -> None:
    body = [{"slug": "c1", "score": 1, "title": "ignored"}]
    response = write(
        client,
        "POST",
        "notes?columns=slug,score&select=slug,title",
        admin,
        body,
        Prefer="return=representation",
    )
    assert response.json() == [{"slug": "c1", "title": "untitled"}]


def test_named_columns_send_the_body_unparsed_and_postgres_checks_it(
    client: TestClient, admin: dict[str, str]
) -> None:
    """With `columns=` (postgrest-js sends it for every array insert) the body is not parsed here."""
    rep = {"Prefer": "return=representation"}
    bulk = [{"slug": "u1", "score": 1, "extra": {"k": [1, "x"]}}, {"slug": "u2"}]
    named = write(
        client, "POST", "notes?columns=slug,score,extra&select=slug,score,extra", admin, bulk, **rep
    )
    assert named.status_code == 201, named.text
    # A named column a row lacks is NULL; with missing=default it takes its default.
    assert named.json() == [
        {"slug": "u1", "score": 1, "extra": {"k": [1, "x"]}},
        {"slug": "u2", "score": None, "extra": None},
    ]
    single = write(client, "POST", "notes?columns=slug,done&select=slug,done", admin, {"slug": "u3"}, **rep)
    assert single.json() == [{"slug": "u3", "done": None}]
    defaulted = write(
        client,
        "POST",
        "notes?columns=slug,done&select=slug,done",
        admin,
        [{"slug": "u4"}],
        Prefer="return=representation,missing=default",
    )
    assert defaulted.json() == [{"slug": "u4", "done": False}]
    # InsForge's "" quirk still applies (those bodies are parsed).
    quirk = write(
        client,
        "POST",
        "notes?columns=slug,score&select=slug,score",
        admin,
        [{"slug": "u5", "score": ""}],
        **rep,
    )
    assert quirk.json() == [{"slug": "u5", "score": None}]
    # Bad bodies are refused by Postgres, and nothing of them is written.
    for body in (b'[{"slug": "u6"}, 5]', b'[{"slug": "u7"', b"7"):
        refused = client.post(
            f"{RECORDS}/notes?columns=slug",
            headers={**admin, "Content-Type": "application/json"},
            content=body,
        )
        assert refused.status_code == 400, (body, refused.text)
        assert {"code", "message"} <= set(refused.json())
    # Only an array is passed on unparsed: `{..},{..}` is not JSON, and stays refused; so does bad UTF-8.
    for body in (b'{"slug": "u9"},{"slug": "u10"}', b'[{"slug": "\xff"}]'):
        refused = client.post(
            f"{RECORDS}/notes?columns=slug",
            headers={**admin, "Content-Type": "application/json"},
            content=body,
        )
        assert refused.status_code == 400 and refused.json()["code"] == "PGRST102", refused.text
    assert rows(client, admin, "notes?select=slug&slug=in.(u6,u7,u9,u10)") == []
    unknown = write(client, "POST", "notes?columns=slug,nope", admin, [{"slug": "u8"}])
    assert unknown.status_code == 400 and unknown.json()["code"] == "PGRST204"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'[{"slug": "b1"}, 5]', "22023"),
        (b"[5]", "22023"),
        (b'["x"]', "22023"),
        # Not an array: wrapped in one (`json_build_array`), so refused as `[7]` is.
        (b"7", "22023"),
        (b"null", "22023"),
        (b'"x"', "22023"),
        (b'[{"slug": "b2"', "22P02"),
    ],
)
def test_with_columns_postgres_refuses_a_body_that_is_not_objects(
    client: TestClient, admin: dict[str, str], body: bytes, code: str
) -> None:
    """PostgREST sends a `?columns=` body unparsed to `json_to_recordset` (its `RawJSON` payload), so the
    refusal is Postgres's own: 22023 for an item that is not an object, 22P02 for JSON that does not parse.
    The same bodies without `?columns=` are PGRST102 (`test_a_body_that_is_not_objects_is_pgrst102`)."""
    refused = client.post(
        f"{RECORDS}/notes?columns=slug", headers={**admin, "Content-Type": "application/json"}, content=body
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == code, refused.text
    assert rows(client, admin, "notes?select=slug&slug=in.(b1,b2)") == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'[{"slug": "b1"}, 5]', "All object keys must match"),
        (b"[5]", "All object keys must match"),
        (b"[[1]]", "All object keys must match"),
        (b"7", "All object keys must match"),
        (b"null", "All object keys must match"),
        (b'[{"slug": "b2"', "Empty or invalid json"),
    ],
)
def test_a_body_that_is_not_objects_is_pgrst102(
    client: TestClient, admin: dict[str, str], body: bytes, message: str
) -> None:
    refused = client.post(
        f"{RECORDS}/notes", headers={**admin, "Content-Type": "application/json"}, content=body
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "PGRST102" and refused.json()["message"] == message, refused.text
    assert rows(client, admin, "notes?select=slug&slug=in.(b1,b2)") == []


def test_unknown_payload_column_is_pgrst204(client: TestClient, admin: dict[str, str]) -> None:
    response = write(client, "POST", "notes", admin, {"slug": "x", "nope": 1})
    assert response.status_code == 400
    assert response.json()["code"] == "PGRST204"


def test_invalid_json_body_is_pgrst102(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        f"{RECORDS}/notes", headers={**admin, "Content-Type": "application/json"}, content=b"{not json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "PGRST102"


def test_headers_only_sets_location(client: TestClient, admin: dict[str, str]) -> None:
    response = write(client, "POST", "notes", admin, {"slug": "loc"}, Prefer="return=headers-only")
    assert response.status_code == 201
    new_id = rows(client, admin, "notes?slug=eq.loc&select=id")[0]["id"]
    assert response.headers["location"] == f"/notes?id=eq.{new_id}"


def test_upsert_merge_and_ignore_duplicates(client: TestClient, admin: dict[str, str]) -> None:
    write(client, "POST", "notes", admin, {"slug": "u", "score": 1})
    merged = write(
        client,
        "POST",
        "notes?on_conflict=slug&select=slug,score",
        admin,
        [{"slug": "u", "score": 2}, {"slug": "u2", "score": 5}],
        Prefer="resolution=merge-duplicates,return=representation",
    )
    assert merged.status_code == 201, merged.text
    assert sorted(r["score"] for r in merged.json()) == [2, 5]
    assert merged.headers["preference-applied"] == "resolution=merge-duplicates, return=representation"
    ignored = write(
        client,
        "POST",
        "notes?on_conflict=slug&select=slug",
        admin,
        {"slug": "u", "score": 9},
        Prefer="resolution=ignore-duplicates,return=representation",
    )
    assert ignored.json() == []
    assert rows(client, admin, "notes?slug=eq.u&select=score") == [{"score": 2}]


def test_put_upserts_one_row_by_primary_key(client: TestClient, admin: dict[str, str]) -> None:
    created = write(
        client,
        "PUT",
        "notes?id=eq.1000",
        admin,
        {"id": 1000, "slug": "put", "title": "one"},
        Prefer="return=representation",
    )
    assert created.status_code == 201, created.text  # it inserted the row
    assert created.json()[0]["title"] == "one"
    replaced = write(client, "PUT", "notes?id=eq.1000", admin, {"id": 1000, "slug": "put", "title": "two"})
    assert replaced.status_code == 204
    assert rows(client, admin, "notes?id=eq.1000&select=title") == [{"title": "two"}]


@pytest.mark.parametrize(
    ("query", "body", "code"),
    [
        ("notes?slug=eq.put", {"id": 1000}, "PGRST105"),
        ("notes?id=eq.1000", {"id": 1001}, "PGRST115"),
        ("notes?id=eq.1000&limit=1", {"id": 1000}, "PGRST114"),
    ],
)
def test_put_errors(
    client: TestClient, admin: dict[str, str], query: str, body: dict[str, Any], code: str
) -> None:
    response = write(client, "PUT", query, admin, body)
    assert response.status_code in (400, 405)
    assert response.json()["code"] == code


def test_patch_minimal_and_representation(client: TestClient, admin: dict[str, str]) -> None:
    write(client, "POST", "notes", admin, [{"slug": "patch1", "score": 1}, {"slug": "patch2", "score": 1}])
    minimal = write(client, "PATCH", "notes?slug=like.patch*", admin, {"score": 7})
    assert minimal.status_code == 204
    assert minimal.headers["content-range"] == "0-1/*"
    shown = write(
        client,
        "PATCH",
        "notes?slug=eq.patch1&select=slug,score",
        admin,
        {"score": 8},
        Prefer="return=representation",
    )
    assert shown.status_code == 200
    assert shown.json() == [{"slug": "patch1", "score": 8}]
    none = write(client, "PATCH", "notes?slug=eq.nothing", admin, {"score": 1})
    assert none.headers["content-range"] == "*/*"


def test_patch_rejects_an_array_body(client: TestClient, admin: dict[str, str]) -> None:
    response = write(client, "PATCH", "notes?slug=eq.patch1", admin, [{"score": 1}])
    assert response.status_code == 400
    assert response.json()["code"] == "PGRST102"


def two_patch_rows(client: TestClient, admin: dict[str, str]) -> None:
    created = write(
        client, "POST", "notes", admin, [{"slug": "patch1", "score": 1}, {"slug": "patch2", "score": 2}]
    )
    assert created.status_code == 201, created.text


def test_single_object_write_rolls_back_when_not_exactly_one(
    client: TestClient, admin: dict[str, str]
) -> None:
    two_patch_rows(client, admin)
    response = write(
        client,
        "PATCH",
        "notes?slug=like.patch*",
        admin,
        {"score": 100},
        Prefer="return=representation",
        Accept="application/vnd.pgrst.object+json",
    )
    assert response.status_code == 406
    assert response.json()["code"] == "PGRST116"
    assert rows(client, admin, "notes?slug=like.patch*&select=score&order=slug") == [
        {"score": 1},
        {"score": 2},
    ]
    one = write(
        client,
        "PATCH",
        "notes?slug=eq.patch2&select=score",
        admin,
        {"score": 3},
        Accept="application/vnd.pgrst.object+json",
    )
    assert one.status_code == 200
    assert one.json() == {"score": 3}


def test_max_affected_with_strict_handling(client: TestClient, admin: dict[str, str]) -> None:
    two_patch_rows(client, admin)
    response = write(
        client, "DELETE", "notes?slug=like.patch*", admin, Prefer="handling=strict, max-affected=1"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "PGRST124"
    assert rows(client, admin, "notes?slug=like.patch*&select=slug&order=slug") == [
        {"slug": "patch1"},
        {"slug": "patch2"},
    ]
    allowed = write(
        client, "DELETE", "notes?slug=like.patch*", admin, Prefer="handling=strict, max-affected=2"
    )
    assert allowed.status_code == 204
    assert rows(client, admin, "notes?select=slug") == []


def test_delete_with_representation_and_count(client: TestClient, admin: dict[str, str]) -> None:
    two_patch_rows(client, admin)
    response = write(
        client,
        "DELETE",
        "notes?slug=like.patch*&select=slug",
        admin,
        Prefer="return=representation,count=exact",
    )
    assert response.status_code == 200
    assert sorted(r["slug"] for r in response.json()) == ["patch1", "patch2"]
    assert response.headers["content-range"] == "0-1/2"
    gone = write(client, "DELETE", "notes?slug=like.patch*", admin, Prefer="count=exact")
    assert gone.status_code == 204
    assert gone.headers["content-range"] == "*/0"


def test_csv_body_inserts_rows(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        f"{RECORDS}/notes?select=slug,score",
        headers={**admin, "Content-Type": "text/csv", "Prefer": "return=representation"},
        content=b"slug,score\ncsv1,1\ncsv2,2\n",
    )
    assert response.status_code == 201, response.text
    assert response.json() == [{"slug": "csv1", "score": 1}, {"slug": "csv2", "score": 2}]


def test_a_csv_field_null_is_sql_null(client: TestClient, admin: dict[str, str]) -> None:
    """PostgREST: "the reserved word NULL is mapped to the SQL null value" (an empty field is an empty
    string)."""
    response = client.post(
        f"{RECORDS}/notes?select=slug,score,due",
        headers={**admin, "Content-Type": "text/csv", "Prefer": "return=representation"},
        content=b"slug,score,due\nnull1,NULL,NULL\nnull2,2,2026-01-02\n",
    )
    assert response.status_code == 201, response.text
    assert response.json() == [
        {"slug": "null1", "score": None, "due": None},
        {"slug": "null2", "score": 2, "due": "2026-01-02"},
    ]


@pytest.mark.parametrize("query", ["notes", "notes?columns=slug,score"])
def test_a_csv_line_of_another_length_than_the_header_is_refused_and_nothing_is_written(
    client: TestClient, admin: dict[str, str], query: str
) -> None:
    """A longer line was a 500 (its extra fields keyed by no column); a shorter one wrote nulls unsent."""
    for body in (b"slug,score\nok,1\nlong,2,3\n", b"slug,score\nok,1\nshort\n"):
        response = client.post(
            f"{RECORDS}/{query}", headers={**admin, "Content-Type": "text/csv"}, content=body
        )
        assert response.status_code == 400, response.text
        assert response.json() == {
            "code": "PGRST102",
            "details": None,
            "hint": None,
            "message": "All lines must have same number of fields",
        }
    assert rows(client, admin, "notes") == []


def test_a_csv_field_longer_than_128_kb_is_written(client: TestClient, admin: dict[str, str]) -> None:
    long_title = "t" * 150_000
    response = client.post(
        f"{RECORDS}/notes",
        headers={**admin, "Content-Type": "text/csv"},
        content=f"slug,title\nlong,{long_title}\n".encode(),
    )
    assert response.status_code == 201, response.text
    assert rows(client, admin, "notes?select=title") == [{"title": long_title}]


def test_bad_values_are_client_errors(client: TestClient, admin: dict[str, str]) -> None:
    response = write(client, "POST", "notes", admin, {"slug": "bad", "score": "many"})
    assert response.status_code == 400
    assert response.json()["code"] == "22P02"
    nul = write(client, "POST", "notes", admin, {"slug": "nul\u0000"})
    assert nul.status_code == 400


def test_form_urlencoded_body_and_content_profile(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        f"{RECORDS}/notes?select=slug,score",
        headers={
            **admin,
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Profile": "public",
            "Prefer": "return=representation",
        },
        content=b"slug=form&score=4",
    )
    assert response.status_code == 201, response.text
    assert response.json() == [{"slug": "form", "score": 4}]
    wrong = write(client, "POST", "notes", admin, {"slug": "x"}, **{"Content-Profile": "nowhere"})
    assert wrong.status_code == 406
    assert wrong.json()["code"] == "PGRST106"


def test_repeated_writes_to_one_url_each_use_their_own_body(
    client: TestClient, admin: dict[str, str]
) -> None:
    # The statement of a write is rendered once per URL, columns and preferences; only the body changes.
    for score in (1, 2, 3):
        response = write(client, "POST", "notes", admin, {"slug": f"cache{score}", "score": score})
        assert response.status_code == 201, response.text
    for score in (10, 20):
        assert write(client, "PATCH", "notes?slug=eq.cache1", admin, {"score": score}).status_code == 204
        assert rows(client, admin, "notes?slug=eq.cache1&select=score") == [{"score": score}]
    # The same URL with other columns, and with a representation, is another statement.
    assert write(client, "PATCH", "notes?slug=eq.cache1", admin, {"title": "t"}).status_code == 204
    answer = write(
        client, "PATCH", "notes?slug=eq.cache1", admin, {"score": 5}, Prefer="return=representation"
    )
    assert [(r["title"], r["score"]) for r in answer.json()] == [("t", 5)]
    assert write(client, "PATCH", "notes?slug=eq.cache2", admin, {"score": 7}).status_code == 204
    assert rows(client, admin, "notes?slug=like.cache*&select=slug,score&order=slug") == [
        {"slug": "cache1", "score": 5},
        {"slug": "cache2", "score": 7},
        {"slug": "cache3", "score": 3},
    ]


def test_bulk_insert_takes_keys_that_only_later_rows_have(client: TestClient, admin: dict[str, str]) -> None:
    body = [{"slug": "k1"}, {"slug": "k2", "score": 2, "title": "later"}, {"score": 3, "slug": "k3"}]
    response = write(
        client,
        "POST",
        "notes?select=slug,score,title&order=slug",
        admin,
        body,
        Prefer="missing=default, return=representation",
    )
    assert response.status_code == 201, response.text
    assert response.json() == [
        {"slug": "k1", "score": None, "title": "untitled"},
        {"slug": "k2", "score": 2, "title": "later"},
        {"slug": "k3", "score": 3, "title": "untitled"},
    ]


def test_several_prefer_headers_count_as_one(client: TestClient, admin: dict[str, str]) -> None:
    """PostgREST reads every `Prefer` header a request carries, as if they were one, joined by commas."""
    response = client.post(
        f"{RECORDS}/notes",
        headers=[
            *admin.items(),
            ("Prefer", "return=representation"),
            ("Content-Type", "application/json"),
            ("Prefer", "count=exact"),
        ],
        content=b'{"slug": "p", "title": "twice"}',
    )
    assert response.status_code == 201
    assert [row["title"] for row in response.json()] == ["twice"]
    assert response.headers["content-range"] == "*/1"
    assert set(response.headers["preference-applied"].replace(" ", "").split(",")) == {
        "return=representation",
        "count=exact",
    }
