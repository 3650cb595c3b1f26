"""Stage three without a database: each plan's statement, text and parameters compared with what is expected.

Values are always parameters (`%s`); identifiers always come quoted from the schema snapshot.
"""

from __future__ import annotations

from typing import Any

import pytest

from kilnbase.records import statements
from kilnbase.records.api_request import RequestShape
from kilnbase.records.call_plan import call_plan, call_target
from kilnbase.records.mutate_plan import delete_plan, insert_plan, update_plan
from kilnbase.records.query_grammar import Field, JsonStep
from kilnbase.records.read_plan import read_plan, table_target
from kilnbase.records.sql_builder import Sql, field_expr
from kilnbase.records.statements import BODY, StatementTemplate, template
from tests.records.memory_schema import memory_snapshot, records_request, rpc_request, shape_of

pytestmark = pytest.mark.no_postgres

SNAPSHOT = memory_snapshot()
PAGE = (
    "SELECT NULL::bigint AS total, count(*) AS page_total,"
    " coalesce(json_agg(\"pgrst_row\"), '[]')::text AS body"
)
GUCS = (
    ' SELECT "pgrst_call".*,'
    " nullif(current_setting('response.headers', true), '') AS response_headers,"
    " nullif(current_setting('response.status', true), '') AS response_status"
    ' FROM "pgrst_call"'
)


def shape(method: str, resource: str, query_string: str = "", /, **headers: str) -> RequestShape:
    return shape_of(records_request(method, resource, query_string, **headers))


def call_shape(method: str, function: str, query_string: str = "", /, **headers: str) -> RequestShape:
    return shape_of(rpc_request(method, function, query_string, **headers))


def rendered(statement: Sql) -> tuple[str, list[Any]]:
    return statement.text, statement.params


def test_a_read_with_filter_order_and_page() -> None:
    read = shape("GET", "posts", "select=id,title&score=gt.3&order=id.desc&limit=2&offset=1")
    plan = read_plan(read, SNAPSHOT, table_target(read, SNAPSHOT))
    page = (
        'SELECT "posts"."id" AS "id", "posts"."title" AS "title" FROM "public"."posts" AS "posts"'
        ' WHERE ("posts"."score" > %s) ORDER BY "posts"."id" DESC LIMIT 2 OFFSET 1'
    )
    assert rendered(statements.table_read(plan, count_exact=False)) == (
        f'{PAGE} FROM ({page}) AS "pgrst_row"',
        ["3"],
    )
    counted = (
        'SELECT (SELECT count(*) FROM (SELECT 1 FROM "public"."posts" AS "posts"'
        ' WHERE ("posts"."score" > %s)) AS "pgrst_counted") AS total, count(*) AS page_total,'
        " coalesce(json_agg(\"pgrst_row\"), '[]')::text AS body"
    )
    assert rendered(statements.table_read(plan, count_exact=True)) == (
        f'{counted} FROM ({page}) AS "pgrst_row"',
        ["3", "3"],
    )


def test_the_range_header_narrows_the_page() -> None:
    read = shape("GET", "posts", "select=id&offset=1&limit=5", range="2-3")
    plan = read_plan(read, SNAPSHOT, table_target(read, SNAPSHOT))
    assert (plan.offset, plan.limit) == (2, 2)
    assert statements.table_read(plan, count_exact=False).text.endswith(' LIMIT 2 OFFSET 2) AS "pgrst_row"')


def test_an_embed_and_a_json_path_filter() -> None:
    read = shape("GET", "posts", "select=title,writer:authors(name)&meta->>lang=eq.en")
    plan = read_plan(read, SNAPSHOT, table_target(read, SNAPSHOT))
    assert rendered(statements.table_read(plan, count_exact=False)) == (
        f"{PAGE} FROM ("
        'SELECT "posts"."title" AS "title", "writer_lateral".pgrst_json AS "writer"'
        ' FROM "public"."posts" AS "posts" LEFT JOIN LATERAL (SELECT row_to_json("pgrst_row") AS pgrst_json'
        ' FROM (SELECT "authors"."name" AS "name"'
        ' FROM "public"."authors" AS "authors" WHERE "authors"."id" = "posts"."author_id") AS "pgrst_row")'
        ' AS "writer_lateral" ON TRUE WHERE ("posts"."meta" ->> %s::text = %s)) AS "pgrst_row"',
        ["lang", "en"],
    )


def test_json_path_steps_are_indexes_only_in_ascii() -> None:
    path = Field("meta", (JsonStep("->", "-1"), JsonStep("->", "--5"), JsonStep("->>", "²")))
    assert rendered(field_expr("t", path)) == ('"t"."meta" -> (-1) -> %s::text ->> %s::text', ["--5", "²"])


def insert_sql(
    resource: str, query_string: str, columns: tuple[str, ...], body: str, /, **headers: str
) -> tuple[str, list[Any]]:
    write = shape("POST", resource, query_string, **headers)
    plan = insert_plan(write, SNAPSHOT, table_target(write, SNAPSHOT), columns)
    return rendered(statements.mutation(plan, body))


def test_an_insert_that_answers_with_its_rows() -> None:
    body = '[{"title":"t"}]'
    assert insert_sql("posts", "select=id", ("title", "score"), body, prefer="return=representation") == (
        'WITH "pgrst_rows" AS (SELECT e AS j FROM jsonb_array_elements(%s::jsonb) AS e),'
        ' pgrst_mutation AS (INSERT INTO "public"."posts" AS "posts" ("title", "score")'
        ' SELECT p."title", p."score" FROM "pgrst_rows", jsonb_populate_record(NULL::"public"."posts",'
        ' "pgrst_rows".j) AS p RETURNING "posts".*)'
        f' {PAGE} FROM (SELECT "posts"."id" AS "id" FROM "pgrst_mutation" AS "posts") AS "pgrst_row"',
        [body],
    )


def test_an_upsert_and_missing_defaults() -> None:
    prefer = "resolution=merge-duplicates,missing=default"
    assert insert_sql("authors", "on_conflict=email", ("email", "name"), "[]", prefer=prefer) == (
        'WITH "pgrst_rows" AS (SELECT e AS j FROM jsonb_array_elements(%s::jsonb) AS e),'
        ' pgrst_mutation AS (INSERT INTO "public"."authors" AS "authors" ("email", "name") SELECT'
        ' CASE WHEN "pgrst_rows".j ? %s THEN p."email" ELSE NULL END,'
        ' CASE WHEN "pgrst_rows".j ? %s THEN p."name" ELSE NULL END'
        ' FROM "pgrst_rows", jsonb_populate_record(NULL::"public"."authors", "pgrst_rows".j) AS p'
        f" WHERE {COUNT_ONE} <> '0'"
        ' ON CONFLICT ("email") DO UPDATE SET "email" = EXCLUDED."email", "name" = EXCLUDED."name"'
        f" WHERE {UNCOUNT_ONE} <> '-1' RETURNING \"authors\".*)"
        f' SELECT count(*) AS page_total, {INSERTED} FROM "pgrst_mutation"',
        ["[]", "email", "name"],
    )
    ignore = "resolution=ignore-duplicates"
    assert insert_sql("authors", "on_conflict=email", ("email",), "[]", prefer=ignore)[0].endswith(
        'AS p ON CONFLICT ("email") DO NOTHING'
    )


INSERTED_SETTING = "nullif(current_setting('pgrst.inserted', true), '')"
COUNT_ONE = f"set_config('pgrst.inserted', (coalesce({INSERTED_SETTING}::int, 0) + 1)::text, true)"
UNCOUNT_ONE = f"set_config('pgrst.inserted', (coalesce({INSERTED_SETTING}::int, 0) - 1)::text, true)"
INSERTED = f"coalesce({INSERTED_SETTING}::int, 0) AS inserted"


def test_an_update_and_a_delete() -> None:
    patch = shape("PATCH", "posts", "id=eq.1")
    plan = update_plan(patch, SNAPSHOT, table_target(patch, SNAPSHOT), ("title",))
    assert rendered(statements.mutation(plan, '{"title":"x"}')) == (
        'UPDATE "public"."posts" AS "posts" SET "title" = p."title"'
        ' FROM jsonb_populate_record(NULL::"public"."posts", %s::jsonb) AS p WHERE ("posts"."id" = %s)',
        ['{"title":"x"}', "1"],
    )
    delete = shape("DELETE", "posts", "id=in.(1,2)&title=not.is.null")
    plan = delete_plan(delete, SNAPSHOT, table_target(delete, SNAPSHOT))
    assert rendered(statements.mutation(plan, "")) == (
        'DELETE FROM "public"."posts" AS "posts"'
        ' WHERE ("posts"."id" = ANY(%s)) AND NOT ("posts"."title" IS NULL)',
        ['{"1","2"}'],
    )


def call_sql(method: str, name: str, args: dict[str, Any], query_string: str = "") -> tuple[str, list[Any]]:
    call = call_shape(method, name, query_string)
    plan = call_plan(call, SNAPSHOT, call_target(call, SNAPSHOT), args)
    return rendered(statements.call(plan, "ARGS", count_exact=False))


def test_calls_of_each_kind_of_result() -> None:
    record = 'json_to_record(%s::json) AS "pgrst_args"'
    assert call_sql("POST", "add_numbers", {"a": 1}) == (
        'WITH "pgrst_call" AS MATERIALIZED (SELECT'
        ' to_json("public"."add_numbers"("a" := "pgrst_args"."a"))::text'
        f' AS body FROM {record}("a" integer)){GUCS}',
        ["ARGS"],
    )
    assert call_sql("GET", "post_titles", {}) == (
        'WITH "pgrst_call" AS MATERIALIZED (SELECT coalesce(json_agg("pgrst_value".v), \'[]\')::text AS body,'
        ' count(*) AS page_total FROM "public"."post_titles"() AS "pgrst_value"(v))' + GUCS,
        [],
    )
    assert call_sql("POST", "touch", {}) == (
        'WITH "pgrst_call" AS MATERIALIZED (SELECT "public"."touch"() AS body)' + GUCS,
        [],
    )
    assert call_sql("POST", "echo_json", {"anything": 1}) == (
        'WITH "pgrst_call" AS MATERIALIZED (SELECT to_json("public"."echo_json"(%s::jsonb))::text AS body)'
        + GUCS,
        ["ARGS"],
    )
    assert call_sql("GET", "posts_by", {"author": "1"}, "author=1&select=id") == (
        'WITH "pgrst_call" AS MATERIALIZED (WITH "pgrst_source" AS (SELECT "posts_by".* FROM'
        f' {record}("author" integer) CROSS JOIN LATERAL'
        ' "public"."posts_by"("author" := "pgrst_args"."author")'
        f' AS "posts_by") {PAGE} FROM (SELECT "posts_by"."id" AS "id" FROM "pgrst_source" AS "posts_by")'
        f' AS "pgrst_row"){GUCS}',
        ["ARGS"],
    )


def test_a_template_takes_each_body_in_every_place_it_goes() -> None:
    read = call_shape("GET", "posts_by", "author=1")
    plan = call_plan(read, SNAPSHOT, call_target(read, SNAPSHOT), {"author": "1"})
    counted = template(statements.call(plan, BODY, count_exact=True))
    assert counted.body_at == (0,)  # the call is a CTE of its own: it runs once, even when counted
    assert counted.fill('{"author":2}').params == ['{"author":2}']
    # A value from a request equal to the stand-in is still a value: the places are found by identity.
    lookalike = "".join(["\x00pgrst-body", "\x00"])
    assert lookalike == BODY
    assert template(Sql().add("SELECT %s, %s, %s", BODY, lookalike, BODY)).body_at == (0, 2)
    assert StatementTemplate("SELECT %s", ("a",)).fill("b").params == ["a"]
