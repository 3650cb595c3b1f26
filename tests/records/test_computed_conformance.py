"""PostgREST's computed columns and computed relationships, from its documentation (Computed Fields,
Computed Relationships) and `ComputedRelsSpec`: a function of a table's row that returns one value reads,
filters and orders like a column; one that returns rows of another table embeds like a foreign key, with
filters, order and limit inside, to-one when it returns one row.

The rows are created once for the module and only read.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

RECORDS = "/api/database/records"


@pytest.fixture(scope="module", autouse=True)
def computed_schema(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """
            CREATE TABLE directors (id int PRIMARY KEY, name text);
            CREATE TABLE films (id int PRIMARY KEY, title text, first_name text, last_name text,
                                director_ref int);
            CREATE TABLE screenings (id int PRIMARY KEY, film_ref int, city text, seats int);
            INSERT INTO directors VALUES (1, 'Agnès Varda'), (2, 'Wong Kar-wai');
            INSERT INTO films VALUES (1, 'Cléo from 5 to 7', 'Cléo', 'Victoire', 1),
                                     (2, 'In the Mood for Love', 'Chow', 'Mo-wan', 2),
                                     (3, 'Vagabond', 'Mona', 'Bergeron', 1);
            INSERT INTO screenings VALUES (1, 1, 'Paris', 80), (2, 1, 'Lyon', 40), (3, 1, 'Nice', 120),
                                          (4, 2, 'Hong Kong', 300);
            CREATE FUNCTION full_name(films) RETURNS text LANGUAGE sql STABLE
              AS $$ SELECT $1.first_name || ' ' || $1.last_name $$;
            CREATE FUNCTION director(films) RETURNS SETOF directors ROWS 1 LANGUAGE sql STABLE
              AS $$ SELECT * FROM directors WHERE id = $1.director_ref $$;
            CREATE FUNCTION director_one(films) RETURNS directors LANGUAGE sql STABLE
              AS $$ SELECT * FROM directors WHERE id = $1.director_ref $$;
            CREATE FUNCTION shows(films) RETURNS SETOF screenings LANGUAGE sql STABLE
              AS $$ SELECT * FROM screenings WHERE film_ref = $1.id $$;
            CREATE FUNCTION films_made(directors) RETURNS SETOF films LANGUAGE sql STABLE
              AS $$ SELECT * FROM films WHERE director_ref = $1.id $$;
            """
        )


def ok(client: TestClient, headers: dict[str, str], query: str) -> Any:
    response = client.get(f"{RECORDS}/{query}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_computed_column_is_selected_like_a_column(client: TestClient, admin: dict[str, str]) -> None:
    assert ok(client, admin, "films?select=title,full_name&id=eq.1") == [
        {"title": "Cléo from 5 to 7", "full_name": "Cléo Victoire"}
    ]
    assert ok(client, admin, "films?select=id,name:full_name&id=eq.2") == [{"id": 2, "name": "Chow Mo-wan"}]
    # `*` is the table's columns only, as in PostgREST.
    assert "full_name" not in ok(client, admin, "films?id=eq.1")[0]


def test_a_computed_column_filters_and_orders(client: TestClient, admin: dict[str, str]) -> None:
    assert ok(client, admin, "films?select=id&full_name=eq.Mona%20Bergeron") == [{"id": 3}]
    assert ok(client, admin, "films?select=id&full_name=fts.Victoire") == [{"id": 1}]
    assert ok(client, admin, "films?select=full_name&order=full_name.desc&limit=2") == [
        {"full_name": "Mona Bergeron"},
        {"full_name": "Cléo Victoire"},
    ]
    assert ok(client, admin, "films?select=id&or=(full_name.like.Chow*,id.eq.3)&order=id") == [
        {"id": 2},
        {"id": 3},
    ]


def test_an_unknown_column_is_still_42703(client: TestClient, admin: dict[str, str]) -> None:
    response = client.get(f"{RECORDS}/films?select=nope", headers=admin)
    assert (response.status_code, response.json()["code"]) == (400, "42703")


def test_a_computed_relationship_embeds_one_row(client: TestClient, admin: dict[str, str]) -> None:
    # A set declared `ROWS 1` is one row, as PostgREST reads it.
    assert ok(client, admin, "films?select=title,director(name)&id=eq.3") == [
        {"title": "Vagabond", "director": {"name": "Agnès Varda"}}
    ]
    # A function returning one row (not a set) embeds as an object.
    assert ok(client, admin, "films?select=title,director_one(name)&id=eq.2") == [
        {"title": "In the Mood for Love", "director_one": {"name": "Wong Kar-wai"}}
    ]


def test_a_computed_relationship_embeds_rows_with_filters_order_and_limit(
    client: TestClient, admin: dict[str, str]
) -> None:
    query = "films?select=id,shows(city,seats)&shows.seats=gt.50&shows.order=seats.desc&shows.limit=1&id=eq.1"
    assert ok(client, admin, query) == [{"id": 1, "shows": [{"city": "Nice", "seats": 120}]}]
    inner = ok(client, admin, "films?select=id,shows!inner(city)&shows.city=eq.Lyon")
    assert inner == [{"id": 1, "shows": [{"city": "Lyon"}]}]
    assert ok(client, admin, "directors?select=name,films_made(title)&id=eq.2") == [
        {"name": "Wong Kar-wai", "films_made": [{"title": "In the Mood for Love"}]}
    ]


def test_computed_relationships_nest_and_spread(client: TestClient, admin: dict[str, str]) -> None:
    assert ok(
        client,
        admin,
        "directors?select=name,films_made(full_name,shows(city))&films_made.order=id&id=eq.1"
        "&films_made.shows.order=id",
    ) == [
        {
            "name": "Agnès Varda",
            "films_made": [
                {
                    "full_name": "Cléo Victoire",
                    "shows": [{"city": "Paris"}, {"city": "Lyon"}, {"city": "Nice"}],
                },
                {"full_name": "Mona Bergeron", "shows": []},
            ],
        }
    ]
    assert ok(client, admin, "films?select=title,...director_one(director:name)&id=eq.1") == [
        {"title": "Cléo from 5 to 7", "director": "Agnès Varda"}
    ]


def test_a_computed_column_filters_a_write(client: TestClient, admin: dict[str, str]) -> None:
    """PATCH and DELETE take computed columns in their filters, as reads do."""
    response = client.patch(
        f"{RECORDS}/films?full_name=eq.Mona%20Bergeron&select=id,title",
        headers={**admin, "Prefer": "return=representation"},
        json={"title": "Vagabond"},  # (the same title: the module's rows stay as they are)
    )
    assert response.status_code == 200, response.text
    assert response.json() == [{"id": 3, "title": "Vagabond"}]
    nothing = client.delete(
        f"{RECORDS}/films?full_name=eq.Nobody", headers={**admin, "Prefer": "return=representation"}
    )
    assert (nothing.status_code, nothing.json()) == (200, [])
