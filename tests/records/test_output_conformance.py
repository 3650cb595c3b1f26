"""PostgREST's output formats, from its documentation and `QuerySpec`/`SingularSpec`/`NullsStripSpec`: CSV
as Postgres writes it (the first row's keys, then each row as Postgres prints a record), one object with
its nulls stripped, PGRST116's wording; and InsForge's quirk that a blank body is `[]` on the records route.
"""

from __future__ import annotations

import psycopg
import pytest
from starlette.testclient import TestClient

RECORDS = "/api/database/records"
CSV = {"Accept": "text/csv"}


@pytest.fixture(scope="module", autouse=True)
def output_tables(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """
            CREATE TABLE csv_things (
                id int PRIMARY KEY, label text, note text, flag boolean, data jsonb, raw json, tags int[]
            );
            INSERT INTO csv_things VALUES
              (1, 'plain', NULL, true, '{"a":1}', '{"b":2}', '{1,2}'),
              (2, 'say "hi", ok', '', false, NULL, NULL, NULL),
              (3, E'two\\nlines', E'back\\\\slash', NULL, '[1, "x"]', '"s"', '{}');
            CREATE TABLE sparse (id int PRIMARY KEY, name text, extra text, nested jsonb);
            INSERT INTO sparse VALUES (1, 'one', NULL, '{"k": null, "v": 1}'), (2, 'two', 'x', NULL);
            """
        )


def test_csv_is_written_as_postgres_prints_records(client: TestClient, admin: dict[str, str]) -> None:
    response = client.get(f"{RECORDS}/csv_things?order=id", headers={**admin, **CSV})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.text == (
        "id,label,note,flag,data,raw,tags\n"
        '1,plain,,t,"{""a"": 1}","{""b"":2}","{1,2}"\n'
        '2,"say ""hi"", ok","",f,,,\n'
        '3,"two\nlines","back\\\\slash",,"[1, ""x""]","""s""",{}'
    )


def test_csv_of_selected_renamed_columns_and_a_page(client: TestClient, admin: dict[str, str]) -> None:
    response = client.get(
        f"{RECORDS}/csv_things?select=key:id,label&order=id.desc&limit=2", headers={**admin, **CSV}
    )
    assert response.text == 'key,label\n3,"two\nlines"\n2,"say ""hi"", ok"'


def test_csv_of_written_rows(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        f"{RECORDS}/sparse?select=id,name",
        headers={**admin, **CSV, "Prefer": "return=representation"},
        json={"id": 100 + (id(client) % 1000), "name": "a, b"},
    )
    assert response.status_code == 201, response.text
    assert response.text.startswith("id,name\n") and response.text.endswith(',"a, b"')


def test_an_empty_csv_is_insforges_blank_body(client: TestClient, admin: dict[str, str]) -> None:
    """PostgREST writes an empty result as a bare newline; InsForge's proxy answers a blank body `[]`."""
    response = client.get(f"{RECORDS}/csv_things?id=eq.0", headers={**admin, **CSV})
    assert (response.status_code, response.text) == (200, "[]")


def test_one_object_with_nulls_stripped(client: TestClient, admin: dict[str, str]) -> None:
    accept = {"Accept": "application/vnd.pgrst.object+json;nulls=stripped"}
    response = client.get(f"{RECORDS}/sparse?id=eq.1", headers={**admin, **accept})
    assert response.status_code == 200, response.text
    assert response.json() == {"id": 1, "name": "one", "nested": {"v": 1}}
    assert response.headers["content-type"] == (
        "application/vnd.pgrst.object+json;nulls=stripped; charset=utf-8"
    )
    many = client.get(f"{RECORDS}/sparse?id=lt.3", headers={**admin, **accept})
    assert many.status_code == 406
    array = client.get(
        f"{RECORDS}/sparse?order=id",
        headers={**admin, "Accept": "application/vnd.pgrst.array+json;nulls=stripped"},
    )
    assert array.json()[1] == {"id": 2, "name": "two", "extra": "x"}


@pytest.mark.parametrize(("query", "rows"), [("sparse?id=lt.3", 2), ("sparse?id=eq.0", 0)])
def test_pgrst116_says_what_postgrest_says(
    client: TestClient, admin: dict[str, str], query: str, rows: int
) -> None:
    response = client.get(
        f"{RECORDS}/{query}", headers={**admin, "Accept": "application/vnd.pgrst.object+json"}
    )
    assert response.status_code == 406
    assert response.json() == {
        "code": "PGRST116",
        "message": "Cannot coerce the result to a single JSON object",
        "details": f"The result contains {rows} rows",
        "hint": None,
    }


def test_blank_bodies_are_insforges_empty_array(client: TestClient, admin: dict[str, str]) -> None:
    created = client.post(
        f"{RECORDS}/sparse", headers={**admin, "Prefer": "return=headers-only"}, json={"id": 900, "name": "h"}
    )
    assert (created.status_code, created.json()) == (201, [])
    assert created.headers["location"] == "/sparse?id=eq.900"
    # A 204 has no body at all, in InsForge as anywhere.
    deleted = client.delete(f"{RECORDS}/sparse?id=eq.900", headers=admin)
    assert (deleted.status_code, deleted.content) == (204, b"")
