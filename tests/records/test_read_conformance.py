"""PostgREST read grammar against a real database: every operator, logic trees, select shapes, embeds,
ordering, paging, Content-Range and counts, media types and error codes."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.support.app import services_of

RECORDS = "/api/database/records"


def get(client: TestClient, headers: dict[str, str], query: str, **extra: str) -> Any:
    return client.get(f"{RECORDS}/{query}", headers={**headers, **extra})


def ids(client: TestClient, headers: dict[str, str], query: str) -> list[int]:
    separator = "&" if "?" in query else "?"
    response = get(client, headers, f"{query}{separator}select=id&order=id")
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("posts?id=eq.2", [2]),
        ("posts?id=neq.2", [1, 3, 4]),
        ("posts?id=gt.2", [3, 4]),
        ("posts?id=gte.2", [2, 3, 4]),
        ("posts?id=lt.2", [1]),
        ("posts?id=lte.2", [1, 2]),
        ("posts?title=like.*world", [1]),
        ("posts?title=ilike.*WORLD*", [1]),
        ("posts?title=match.^S", [2]),
        ("posts?title=imatch.^s", [2]),
        ("posts?id=in.(1,3)", [1, 3]),
        ('posts?title=in.("Draft, with comma","Zebra \\"quoted\\"")', [3, 4]),
        ("posts?id=in.()", []),
        ("posts?rating=is.null", [3]),
        ("posts?rating=not.is.null", [1, 2, 4]),
        ("posts?rating=is.not_null", [1, 2, 4]),
        ("posts?published=is.true", [1, 2, 4]),
        ("posts?published=is.false", [3]),
        ("posts?editor_id=isdistinct.2", [2, 3, 4]),
        ("posts?search=fts.cats", [1, 4]),
        ("posts?search=plfts.fat cats", [4]),
        ("posts?search=phfts.fat cats", [4]),
        ("posts?search=wfts.cats -fat", [1]),
        ("posts?body=fts(english).dogs", [2]),
        ("posts?tags=cs.{cats}", [1, 4]),
        ("posts?tags=cd.{cats,intro,dogs}", [1, 2, 3]),
        ("posts?tags=ov.{dogs,zebra}", [2, 4]),
        ('posts?meta=cs.{"lang":"en"}', [1, 4]),
        ("posts?during=sl.[10,11]", [1, 2]),
        ("posts?during=sr.[10,11]", [4]),
        ("posts?during=nxr.[6,7]", [1]),
        ("posts?during=nxl.[6,7]", [4]),
        ("posts?during=adj.[9,20)", [2, 4]),
        ("posts?during=ov.[2,3]", [1]),
        ("posts?id=not.eq.2", [1, 3, 4]),
        ("posts?id=not.in.(1,2)", [3, 4]),
        ("posts?title=like(any).{Hello*,Zebra*}", [1, 4]),
        ("posts?title=like(all).{*e*,*o*}", [1, 2, 4]),
        ("posts?id=gt(all).{1,2}", [3, 4]),
        ("posts?id=eq(any).{1,4}", [1, 4]),
        ("posts?meta->>lang=eq.fr", [2]),
        ("posts?meta->views=gt.5", [1, 4]),
        ("posts?meta->nested->a->0=eq.1", [1]),
        ("posts?or=(id.eq.1,id.eq.3)", [1, 3]),
        ("posts?or=(id.eq.1,and(rating.gte.3,rating.lt.4))", [1, 2]),
        ("posts?and=(published.is.true,or(rating.gt.4,tags.cs.{dogs}))", [1, 2, 4]),
        ("posts?not.or=(id.eq.1,id.eq.2)", [3, 4]),
        ('posts?or=(title.eq."Draft, with comma",id.in.(4))', [3, 4]),
        ("posts?or=(id.eq.1,not.and(id.gte.2,id.lte.3))", [1, 4]),
        ("posts?id=gt.1&id=lt.4", [2, 3]),
        ("posts?author_id=eq.1&or=(rating.gt.4,rating.lt.3.5)", [1, 2]),
    ],
)
def test_filter_operators(client: TestClient, admin: dict[str, str], query: str, expected: list[int]) -> None:
    assert ids(client, admin, query) == expected


def test_select_renames_casts_and_json_paths(client: TestClient, admin: dict[str, str]) -> None:
    response = get(
        client,
        admin,
        "posts?select=key:id,rating::text,lang:meta->>lang,meta->views,first:meta->nested->a->0&id=eq.1",
    )
    assert response.json() == [{"key": 1, "rating": "4.5", "lang": "en", "views": 10, "first": 1}]


def test_select_with_spaces_and_quoted_columns(client: TestClient, admin: dict[str, str]) -> None:
    response = get(client, admin, 'odd%20table?select=id, "weird \\"col\\""')
    assert response.status_code == 200, response.text
    assert response.json() == [{"id": 1, 'weird "col"': "x"}]


def test_many_to_one_with_hint_and_alias(client: TestClient, admin: dict[str, str]) -> None:
    response = get(
        client,
        admin,
        "posts?select=id,writer:authors!author_id(name),editor:authors!editor_id(name)&id=lte.2&order=id",
    )
    assert response.json() == [
        {"id": 1, "writer": {"name": "Ada"}, "editor": {"name": "Brian"}},
        {"id": 2, "writer": {"name": "Ada"}, "editor": None},
    ]


def test_fk_name_hint_and_column_as_target(client: TestClient, admin: dict[str, str]) -> None:
    by_fk = get(client, admin, "posts?select=id,authors!posts_editor_id_fkey(name)&id=eq.1").json()
    assert by_fk == [{"id": 1, "authors": {"name": "Brian"}}]
    by_column = get(client, admin, "posts?select=id,author_id(name)&id=eq.4").json()
    assert by_column == [{"id": 4, "author_id": {"name": "Cleo"}}]


def test_one_to_many_with_nested_order_limit_offset_and_filter(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = get(
        client,
        admin,
        "posts?select=id,comments(body)&comments.order=body.desc&comments.limit=1&comments.offset=1&id=in.(1,3)&order=id",
    )
    assert response.json() == [{"id": 1, "comments": [{"body": "great"}]}, {"id": 3, "comments": []}]
    filtered = get(client, admin, "posts?select=id,comments(body)&comments.body=eq.nice&id=eq.1").json()
    assert filtered == [{"id": 1, "comments": [{"body": "nice"}]}]


def test_many_to_many_through_junction(client: TestClient, admin: dict[str, str]) -> None:
    response = get(client, admin, "posts?select=id,labels(name)&labels.order=name&order=id")
    assert [row["labels"] for row in response.json()] == [
        [{"name": "news"}, {"name": "pets"}],
        [{"name": "pets"}],
        [],
        [{"name": "pets"}],
    ]
    reverse = get(client, admin, "labels?select=name,posts(id)&name=eq.pets&posts.order=id").json()
    assert reverse == [{"name": "pets", "posts": [{"id": 1}, {"id": 2}, {"id": 4}]}]


def test_one_to_one_is_an_object_both_ways(client: TestClient, admin: dict[str, str]) -> None:
    response = get(client, admin, "authors?select=name,profiles(bio)&order=id").json()
    assert response[0] == {"name": "Ada", "profiles": {"bio": "Mathematician"}}
    assert response[2] == {"name": "Cleo", "profiles": None}
    back = get(client, admin, "profiles?select=bio,authors(name)&author_id=eq.2").json()
    assert back == [{"bio": "Writer", "authors": {"name": "Brian"}}]


def test_inner_embed_filters_parents(client: TestClient, admin: dict[str, str]) -> None:
    left = get(client, admin, "posts?select=id,labels(name)&labels.name=eq.news&order=id").json()
    assert [row["id"] for row in left] == [1, 2, 3, 4]
    inner = get(client, admin, "posts?select=id,labels!inner(name)&labels.name=eq.news").json()
    assert inner == [{"id": 1, "labels": [{"name": "news"}]}]


def test_empty_embed_and_existence_filters(client: TestClient, admin: dict[str, str]) -> None:
    with_comments = get(client, admin, "posts?select=id,comments()&comments=not.is.null&order=id").json()
    assert with_comments == [{"id": 1}, {"id": 2}]
    without = get(client, admin, "posts?select=id,comments(id)&comments=is.null&order=id").json()
    assert [row["id"] for row in without] == [3, 4]
    bad = get(client, admin, "posts?select=id,comments(id)&comments=eq.1")
    assert bad.status_code == 400
    assert bad.json()["code"] == "PGRST120"


def test_spread_to_one_and_to_many(client: TestClient, admin: dict[str, str]) -> None:
    one = get(client, admin, "posts?select=id,...authors!author_id(author:name)&id=eq.2").json()
    assert one == [{"id": 2, "author": "Ada"}]
    many = get(client, admin, "posts?select=id,...comments(body)&id=eq.1&comments.order=id").json()
    assert many == [{"id": 1, "body": ["nice", "great"]}]


def test_nested_embeds(client: TestClient, admin: dict[str, str]) -> None:
    response = get(
        client, admin, "authors?select=name,posts!author_id(title,comments(body))&id=eq.1&posts.order=id"
    )
    assert response.json() == [
        {
            "name": "Ada",
            "posts": [
                {"title": "Hello world", "comments": [{"body": "nice"}, {"body": "great"}]},
                {"title": "Second thoughts", "comments": [{"body": "meh"}]},
            ],
        }
    ]


def test_ambiguous_embed_is_300_pgrst201(client: TestClient, admin: dict[str, str]) -> None:
    response = get(client, admin, "posts?select=*,authors(*)")
    assert response.status_code == 300
    body = response.json()
    assert body["code"] == "PGRST201"
    assert {d["relationship"].split()[0] for d in body["details"]} == {
        "posts_author_id_fkey",
        "posts_editor_id_fkey",
    }
    assert "authors!posts_author_id_fkey" in body["hint"]


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("nope", 404, "PGRST205"),
        ("posts?select=nope", 400, "42703"),
        ("posts?nope=eq.1", 400, "42703"),
        ("posts?select=id,nothing(*)", 400, "PGRST200"),
        ("posts?id=zz.1", 400, "PGRST100"),
        ("posts?id=eq", 400, "PGRST100"),
        ("posts?select=id,(", 400, "PGRST100"),
        ("posts?or=(id.eq.1", 400, "PGRST100"),
        ("posts?id=is.maybe", 400, "PGRST100"),
        ("posts?order=id.sideways", 400, "PGRST100"),
        ("posts?limit=-1", 400, "PGRST100"),
        ("posts?comments.id=eq.1", 400, "PGRST108"),
        ("posts?select=id,comments(id)&order=comments(id)", 400, "PGRST118"),
        ("posts?id=eq.notanumber", 400, "22P02"),
        ("posts?select=amount.sum()", 400, "PGRST123"),
        ("posts?select=id::int from pg_authid", 400, "PGRST100"),
        ("posts?schema=secret", 406, "PGRST106"),
    ],
)
def test_error_codes(client: TestClient, admin: dict[str, str], query: str, status: int, code: str) -> None:
    response = get(client, admin, query)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert set(body) == {"code", "message", "details", "hint"}


def test_missing_table_suggests_a_close_name(client: TestClient, admin: dict[str, str]) -> None:
    body = get(client, admin, "post").json()
    assert body["hint"] == "Perhaps you meant the table 'public.posts'"


def test_order_with_nulls_json_paths_and_to_one_embed(client: TestClient, admin: dict[str, str]) -> None:
    assert ids(client, admin, "posts?order=rating.desc.nullsfirst")[:0] == []
    rows = get(client, admin, "posts?select=id&order=rating.desc.nullsfirst").json()
    assert [r["id"] for r in rows] == [3, 4, 1, 2]
    rows = get(client, admin, "posts?select=id&order=rating.asc.nullslast,id").json()
    assert [r["id"] for r in rows] == [2, 1, 4, 3]
    rows = get(client, admin, "posts?select=id&order=meta->views.desc.nullslast").json()
    assert [r["id"] for r in rows] == [4, 1, 2, 3]
    rows = get(client, admin, "posts?select=id,authors!author_id(name)&order=authors(name).desc,id").json()
    assert [r["id"] for r in rows] == [4, 3, 1, 2]


def test_limit_offset_and_content_range(client: TestClient, admin: dict[str, str]) -> None:
    response = get(client, admin, "posts?select=id&order=id&limit=2&offset=1")
    assert response.status_code == 200
    assert [r["id"] for r in response.json()] == [2, 3]
    assert response.headers["content-range"] == "1-2/*"
    empty = get(client, admin, "posts?id=eq.99")
    assert empty.json() == []
    assert empty.headers["content-range"] == "*/*"


def test_exact_count_gives_206_for_a_partial_page(client: TestClient, admin: dict[str, str]) -> None:
    response = get(client, admin, "posts?select=id&limit=2", Prefer="count=exact")
    assert response.status_code == 206
    assert response.headers["content-range"] == "0-1/4"
    assert response.headers["preference-applied"] == "count=exact"
    full = get(client, admin, "posts?select=id", Prefer="count=exact")
    assert full.status_code == 200
    assert full.headers["content-range"] == "0-3/4"
    none = get(client, admin, "posts?id=eq.99", Prefer="count=exact")
    assert none.headers["content-range"] == "*/0"
    filtered = get(
        client, admin, "posts?select=id,labels!inner(name)&labels.name=eq.pets", Prefer="count=exact"
    )
    assert filtered.headers["content-range"] == "0-2/3"


def test_planned_and_estimated_counts(client: TestClient, admin: dict[str, str]) -> None:
    planned = get(client, admin, "posts?select=id", Prefer="count=planned")
    total = planned.headers["content-range"].split("/")[1]
    assert total.isdigit()
    estimated = get(client, admin, "posts?select=id", Prefer="count=estimated")
    assert estimated.headers["content-range"] == "0-3/4"


def test_range_header(client: TestClient, admin: dict[str, str]) -> None:
    response = get(client, admin, "posts?select=id&order=id", Range="1-2", **{"Range-Unit": "items"})
    assert [r["id"] for r in response.json()] == [2, 3]
    assert response.headers["content-range"] == "1-2/*"
    open_ended = get(client, admin, "posts?select=id&order=id", Range="2-")
    assert [r["id"] for r in open_ended.json()] == [3, 4]
    bad = get(client, admin, "posts?select=id", Range="3-1")
    assert bad.status_code == 416
    assert bad.json()["code"] == "PGRST103"


def test_offset_past_the_total_is_416(client: TestClient, admin: dict[str, str]) -> None:
    response = get(client, admin, "posts?select=id&offset=10", Prefer="count=exact")
    assert response.status_code == 416
    assert response.headers["content-range"] == "*/4"
    assert response.json()["code"] == "PGRST103"


def test_head_has_headers_and_no_body(client: TestClient, admin: dict[str, str]) -> None:
    response = client.head(f"{RECORDS}/posts?select=id", headers={**admin, "Prefer": "count=exact"})
    assert response.status_code == 200
    assert response.headers["content-range"] == "0-3/4"
    assert response.content == b""


def test_single_object_accept(client: TestClient, admin: dict[str, str]) -> None:
    one = get(client, admin, "posts?select=id,title&id=eq.1", Accept="application/vnd.pgrst.object+json")
    assert one.status_code == 200
    assert one.json() == {"id": 1, "title": "Hello world"}
    assert one.headers["content-type"].startswith("application/vnd.pgrst.object+json")
    many = get(client, admin, "posts?select=id", Accept="application/vnd.pgrst.object+json")
    assert many.status_code == 406
    assert many.json()["code"] == "PGRST116"
    assert many.json()["details"] == "The result contains 4 rows"


def test_csv_output(client: TestClient, admin: dict[str, str]) -> None:
    response = get(client, admin, "posts?select=id,title&order=id&limit=3", Accept="text/csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows == [
        ["id", "title"],
        ["1", "Hello world"],
        ["2", "Second thoughts"],
        ["3", "Draft, with comma"],
    ]


def test_unavailable_media_type_is_406(client: TestClient, admin: dict[str, str]) -> None:
    response = get(client, admin, "posts", Accept="application/xml")
    assert response.status_code == 406
    assert response.json()["code"] == "PGRST107"


def test_schema_selection(client: TestClient, admin: dict[str, str]) -> None:
    assert get(client, admin, "posts?schema=public&select=id&id=eq.1").json() == [{"id": 1}]
    header = get(client, admin, "posts?select=id&id=eq.1", **{"Accept-Profile": "public"})
    assert header.json() == [{"id": 1}]
    hidden = get(client, admin, "audit_logs?schema=system")
    assert hidden.status_code == 406


def test_strict_handling_rejects_unknown_preferences(client: TestClient, admin: dict[str, str]) -> None:
    response = get(client, admin, "posts", Prefer="handling=strict, frobnicate=yes")
    assert response.status_code == 400
    assert response.json()["code"] == "PGRST122"
    lenient = get(client, admin, "posts?select=id", Prefer="frobnicate=yes")
    assert lenient.status_code == 200


def test_new_table_is_usable_at_once(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE fresh_things (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO fresh_things VALUES (1, 'new')")
    assert get(client, admin, "fresh_things?select=name").json() == [{"name": "new"}]


def test_records_need_a_credential(client: TestClient) -> None:
    """InsForge's records proxy sits behind its `verifyUser`: no credential is no token, and an anon key
    that is not the project's is refused as one."""
    response = client.get(f"{RECORDS}/posts")
    assert response.status_code == 401
    assert (response.json()["error"], response.json()["message"]) == (
        "AUTH_INVALID_CREDENTIALS",
        "No token provided",
    )
    bad = client.get(f"{RECORDS}/posts", headers={"Authorization": "Bearer anon_nope"})
    assert bad.status_code == 401
    assert (bad.json()["error"], bad.json()["message"]) == ("AUTH_INVALID_CREDENTIALS", "Invalid anon key")


def test_rpc_calls(client: TestClient, admin: dict[str, str]) -> None:
    rpc = "/api/database/rpc"
    assert client.get(f"{rpc}/add_numbers?a=2&b=5", headers=admin).json() == 7
    assert client.get(f"{rpc}/add_numbers?a=2", headers=admin).json() == 3
    assert client.post(f"{rpc}/add_numbers", json={"a": 40, "b": 2}, headers=admin).json() == 42
    rows = client.get(f"{rpc}/posts_by?author=1&select=id,title&order=id.desc&limit=1", headers=admin)
    assert rows.json() == [{"id": 2, "title": "Second thoughts"}]
    filtered = client.post(
        f"{rpc}/posts_by?id=eq.1&select=id,comments(body)", json={"author": 1}, headers=admin
    )
    assert filtered.json() == [{"id": 1, "comments": [{"body": "nice"}, {"body": "great"}]}]
    assert client.get(f"{rpc}/first_post?select=id", headers=admin).json() == {"id": 1}
    titles = client.get(f"{rpc}/post_titles", headers=admin).json()
    assert titles[0] == "Hello world"
    assert client.post(f"{rpc}/echo_json", json={"x": [1, {"y": 2}]}, headers=admin).json() == {
        "x": [1, {"y": 2}]
    }
    assert client.post(f"{rpc}/touch_labels", headers=admin).status_code == 204


def test_a_repeated_call_shape_binds_each_calls_own_values(client: TestClient, admin: dict[str, str]) -> None:
    """Statements are cached per request shape; the arguments and the body never are."""
    rpc = "/api/database/rpc"
    counted = {**admin, "Prefer": "count=exact"}
    answers = [
        client.post(f"{rpc}/posts_by?select=id&order=id", json={"author": author}, headers=counted)
        for author in (1, 2, 1, 9)
    ]
    assert [[r["id"] for r in a.json()] for a in answers] == [[1, 2], [3], [1, 2], []]
    assert [a.headers["content-range"] for a in answers] == ["0-1/2", "0-0/1", "0-1/2", "*/0"]
    sums = [client.post(f"{rpc}/add_numbers", json={"a": a, "b": 1}, headers=admin).json() for a in (1, 5)]
    assert sums == [2, 6]


def test_argument_names_no_function_has_are_not_remembered(client: TestClient, admin: dict[str, str]) -> None:
    """The call-plan memory is keyed by the parameters the arguments name: a caller cannot fill it with
    names of its own choosing (here a function that takes the whole body, so any names are accepted)."""
    records = services_of(client).records
    for _attempt in range(5):  # DDL by another test may reload the schema meanwhile: measure again
        first = client.post("/api/database/rpc/echo_json", json={"key0": 0}, headers=admin)
        assert first.json() == {"key0": 0}
        plans = records.plans
        remembered = len(plans.calls)
        assert remembered >= 1
        for index in range(1, 20):
            answer = client.post("/api/database/rpc/echo_json", json={f"key{index}": index}, headers=admin)
            assert answer.json() == {f"key{index}": index}
        if records.plans is plans:
            break
    else:
        pytest.fail("the schema snapshot kept changing")
    assert len(plans.calls) == remembered


def test_rpc_errors(client: TestClient, admin: dict[str, str]) -> None:
    rpc = "/api/database/rpc"
    missing = client.post(f"{rpc}/no_such_fn", json={}, headers=admin)
    assert missing.status_code == 404
    assert missing.json()["code"] == "PGRST202"
    wrong_args = client.post(f"{rpc}/add_numbers", json={"z": 1}, headers=admin)
    assert wrong_args.status_code == 404
    assert client.delete(f"{rpc}/add_numbers", headers=admin).json()["code"] == "PGRST101"
    read_only = client.get(f"{rpc}/touch_labels", headers=admin)
    assert read_only.status_code == 405
    assert read_only.json()["code"] == "25006"
    raised = client.post(f"{rpc}/fail_with", json={"code": "P0001"}, headers=admin)
    assert raised.status_code == 400
    assert raised.json() == {"code": "P0001", "message": "custom failure", "details": None, "hint": "a hint"}
    custom = client.post(f"{rpc}/fail_with", json={"code": "PT402"}, headers=admin)
    assert custom.status_code == 402
    bad_value = client.post(f"{rpc}/add_numbers", json={"a": "x"}, headers=admin)
    assert bad_value.status_code == 400


def test_ddl_by_anyone_refreshes_the_schema_cache(client: TestClient, database_url: str) -> None:
    """The event trigger's NOTIFY reaches the listener: the cache learns of a table no request named yet."""
    import time

    import psycopg

    cache = services_of(client).core.schema_cache
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE heard_about (id int PRIMARY KEY)")
    deadline = time.monotonic() + 10
    while ("public", "heard_about") not in cache.snapshot.tables and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ("public", "heard_about") in cache.snapshot.tables


def test_logic_trees_inside_embeds(client: TestClient, admin: dict[str, str]) -> None:
    response = get(
        client,
        admin,
        "posts?select=id,comments(body)&comments.or=(body.eq.nice,body.eq.meh)&id=lte.2&order=id",
    )
    assert response.json() == [
        {"id": 1, "comments": [{"body": "nice"}]},
        {"id": 2, "comments": [{"body": "meh"}]},
    ]


def test_range_header_intersects_limit_and_offset(client: TestClient, admin: dict[str, str]) -> None:
    response = get(client, admin, "posts?select=id&order=id&offset=1&limit=2", Range="0-1")
    assert [r["id"] for r in response.json()] == [2]
    assert response.headers["content-range"] == "1-1/*"


def test_head_on_rpc_and_counted_rpc(client: TestClient, admin: dict[str, str]) -> None:
    head = client.head("/api/database/rpc/posts_by?author=1", headers={**admin, "Prefer": "count=exact"})
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-range"] == "0-1/2"


def test_embedding_through_a_view(client: TestClient, admin: dict[str, str]) -> None:
    forward = get(client, admin, "published_posts?select=title,authors(name)&order=id").json()
    assert forward[0] == {"title": "Hello world", "authors": {"name": "Ada"}}
    assert len(forward) == 3
    back = get(client, admin, "authors?select=name,published_posts(title)&id=eq.2").json()
    assert back == [{"name": "Brian", "published_posts": []}]
    comments = get(client, admin, "published_posts?select=id,comments(body)&id=eq.2").json()
    assert comments == [{"id": 2, "comments": [{"body": "meh"}]}]
