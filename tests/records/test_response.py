"""Stage four without a database: status, headers and body from a result row, compared with expected ones."""

from __future__ import annotations

from typing import Any

import pytest

from kilnbase.records import media_type
from kilnbase.records.api_request import ApiRequest
from kilnbase.records.errors import RecordsError
from kilnbase.records.mutate_plan import MutatePlan, delete_plan, insert_plan
from kilnbase.records.read_plan import table_target
from kilnbase.records.response import (
    RecordsResponse,
    call_response,
    mutation_response,
    read_response,
)
from tests.records.memory_schema import api_of, memory_snapshot, records_request, rpc_request

pytestmark = pytest.mark.no_postgres

SNAPSHOT = memory_snapshot()
ROWS = '[{"id":1,"title":"a","meta":null},{"id":2,"title":"b, c","meta":{"k":null}}]'


def api(method: str, resource: str = "posts", query_string: str = "", /, **headers: str) -> ApiRequest:
    return api_of(records_request(method, resource, query_string, **headers))


def row(body: str, page_total: int, total: int | None = None, /, **gucs: str) -> dict[str, Any]:
    return {
        "total": total,
        "page_total": page_total,
        "body": body,
        "response_status": gucs.get("status"),
        "response_headers": gucs.get("headers"),
    }


def answer(response: RecordsResponse) -> tuple[int, dict[str, str], str, str | None]:
    return response.status, response.headers, response.body, response.media_type


def test_a_page_of_rows() -> None:
    assert answer(read_response(api("GET"), row(ROWS, 2), 0, None)) == (
        200,
        {"Content-Range": "0-1/*"},
        ROWS,
        media_type.JSON,
    )


def test_a_counted_partial_page_is_206() -> None:
    response = read_response(api("GET", prefer="count=exact"), row(ROWS, 2, 10), 4, None)
    assert answer(response) == (
        206,
        {"Content-Range": "4-5/10", "Preference-Applied": "count=exact"},
        ROWS,
        media_type.JSON,
    )


def test_a_planned_count_and_an_empty_page() -> None:
    response = read_response(api("GET", prefer="count=planned"), row("[]", 0), 0, 7)
    assert answer(response)[:2] == (206, {"Content-Range": "*/7", "Preference-Applied": "count=planned"})
    assert read_response(api("GET"), row("[]", 0), 0, None).headers == {"Content-Range": "*/*"}


def test_an_offset_past_the_total_is_416() -> None:
    with pytest.raises(RecordsError) as caught:
        read_response(api("GET", prefer="count=exact"), row("[]", 0, 3), 10, None)
    assert (caught.value.status, caught.value.code) == (416, "PGRST103")
    assert caught.value.headers == {"Content-Range": "*/3", "Preference-Applied": "count=exact"}


def test_head_answers_headers_only() -> None:
    assert answer(read_response(api("HEAD"), row(ROWS, 2), 0, None)) == (
        200,
        {"Content-Range": "0-1/*"},
        "",
        media_type.JSON,
    )


def test_media_types() -> None:
    one = '[{"id":1}]'
    single = read_response(api("GET", accept="application/vnd.pgrst.object+json"), row(one, 1), 0, None)
    assert (single.body, single.media_type) == ('{"id":1}', media_type.OBJECT)
    with pytest.raises(RecordsError) as caught:
        read_response(api("GET", accept="application/vnd.pgrst.object+json"), row(ROWS, 2), 0, None)
    assert (caught.value.status, caught.value.code, caught.value.details) == (
        406,
        "PGRST116",
        "The result contains 2 rows",
    )
    written = 'id,title,meta\n1,a,\n2,"b, c","{""k"": null}"'  # (Postgres writes CSV: see sql_builder)
    as_csv = read_response(api("GET", accept="text/csv"), row(written, 2), 0, None)
    assert (as_csv.body, as_csv.media_type) == (written, media_type.CSV)
    stripped = read_response(api("GET", accept=media_type.STRIPPED), row(ROWS, 2), 0, None)
    assert stripped.body == '[{"id":1,"title":"a"},{"id":2,"title":"b, c","meta":{}}]'


def test_a_function_sets_status_and_headers() -> None:
    gucs = {"status": "202", "headers": '[{"X-Made-By":"fn"}]'}
    response = read_response(api("GET"), row("[]", 0, **gucs), 0, None, call=True)
    assert answer(response) == (202, {"Content-Range": "*/*", "X-Made-By": "fn"}, "[]", media_type.JSON)


@pytest.mark.parametrize(
    ("gucs", "code"),
    [
        ({"status": "²00"}, "PGRST112"),
        ({"status": "99"}, "PGRST112"),
        ({"status": "2" * 5000}, "PGRST112"),  # (past int()'s 4,300 digits: once a ValueError)
        ({"headers": '{"a":"b"}'}, "PGRST111"),
        ({"headers": '[{"a":"b","c":"d"}]'}, "PGRST111"),
        ({"headers": '[{"a":"b\\r\\nSet-Cookie: x"}]'}, "PGRST111"),
        ({"headers": "not json"}, "PGRST111"),
    ],
)
def test_bad_response_gucs_are_500(gucs: dict[str, str], code: str) -> None:
    with pytest.raises(RecordsError) as caught:
        read_response(api("GET"), row("[]", 0, **gucs), 0, None, call=True)
    assert (caught.value.status, caught.value.code) == (500, code)


def test_call_answers() -> None:
    post = api_of(rpc_request("POST", "add_numbers"))  # (the shape is what matters, not the routine)
    scalar = {"body": "3", "response_status": None, "response_headers": None}
    assert answer(call_response(post, scalar, returns_set=False, void=False)) == (
        200,
        {"Content-Range": "0-0/*"},
        "3",
        media_type.JSON,
    )
    rows = {**scalar, "body": '["a","b"]', "page_total": 2}
    assert answer(call_response(post, rows, returns_set=True, void=False))[:3] == (
        200,
        {"Content-Range": "0-1/*"},
        '["a","b"]',
    )
    # `count=exact` counts what the function returned: a single value is one row (PostgREST's RpcSpec).
    counted = api_of(rpc_request("POST", "add_numbers", prefer="count=exact"))
    assert answer(call_response(counted, scalar, returns_set=False, void=False))[1] == {
        "Content-Range": "0-0/1",
        "Preference-Applied": "count=exact",
    }
    assert answer(call_response(counted, rows, returns_set=True, void=False))[1]["Content-Range"] == "0-1/2"
    empty = {**rows, "body": "[]", "page_total": 0}
    assert answer(call_response(counted, empty, returns_set=True, void=False))[1]["Content-Range"] == "*/0"
    void = {"body": None, "response_status": "201", "response_headers": None}
    assert answer(call_response(post, void, returns_set=False, void=True)) == (201, {}, "", None)
    strict = api_of(rpc_request("POST", "post_titles", prefer="handling=strict,max-affected=1"))
    with pytest.raises(RecordsError) as caught:
        call_response(strict, rows, returns_set=True, void=False)
    assert (caught.value.status, caught.value.code) == (400, "PGRST124")


def insert(request: ApiRequest, *, upsert: bool = False) -> MutatePlan:
    target = table_target(request.shape, SNAPSHOT)
    return insert_plan(request.shape, SNAPSHOT, target, ("title",), upsert=upsert)


def test_insert_answers() -> None:
    minimal = api("POST")
    assert answer(mutation_response(minimal, insert(minimal), "[]", 2)) == (
        201,
        {"Content-Range": "*/*"},
        "[]",
        media_type.JSON,
    )
    shown = api("POST", prefer="return=representation,count=exact")
    assert answer(mutation_response(shown, insert(shown), ROWS, 2)) == (
        201,
        {"Content-Range": "*/2", "Preference-Applied": "return=representation, count=exact"},
        ROWS,
        media_type.JSON,
    )
    located = api("POST", prefer="return=headers-only")
    assert answer(mutation_response(located, insert(located), '[{"id":7,"title":"a b"}]', 1)) == (
        201,
        {"Content-Range": "*/*", "Location": "/posts?id=eq.7", "Preference-Applied": "return=headers-only"},
        "[]",  # InsForge's proxy answers a blank body with `[]`
        media_type.JSON,
    )
    put = api("PUT", "posts", "id=eq.7")  # an upsert the client did not ask for by preference
    assert answer(mutation_response(put, insert(put, upsert=True), "[]", 1, 1)) == (
        204,
        {"Content-Range": "*/*"},
        "",
        None,
    )


def test_upsert_status_is_postgrests() -> None:
    """PUT: 201 when it inserted, else 200; POST merging duplicates: 200 when it inserted nothing."""
    put = api("PUT", "posts", "id=eq.7", prefer="return=representation")
    row = '[{"id":7,"title":"t"}]'
    assert mutation_response(put, insert(put, upsert=True), row, 1, 1).status == 201
    assert mutation_response(put, insert(put, upsert=True), row, 1, 0).status == 200
    merged = api("POST", prefer="resolution=merge-duplicates")
    assert mutation_response(merged, insert(merged), "[]", 2, 0).status == 200
    assert mutation_response(merged, insert(merged), "[]", 2, 1).status == 201
    ignored = api("POST", prefer="resolution=ignore-duplicates")
    assert mutation_response(ignored, insert(ignored), "[]", 0).status == 201


def test_delete_answers() -> None:
    request = api("DELETE", "posts", "id=gt.0", prefer="count=exact")
    plan = delete_plan(request.shape, SNAPSHOT, table_target(request.shape, SNAPSHOT))
    assert answer(mutation_response(request, plan, "[]", 3)) == (
        204,
        {"Content-Range": "0-2/3", "Preference-Applied": "count=exact"},
        "",
        None,
    )
    single = api("DELETE", "posts", "id=eq.1", accept="application/vnd.pgrst.object+json")
    plan = delete_plan(single.shape, SNAPSHOT, table_target(single.shape, SNAPSHOT))
    assert answer(mutation_response(single, plan, '[{"id":1}]', 1))[:3] == (
        200,
        {"Content-Range": "0-0/*"},
        '{"id":1}',
    )
    with pytest.raises(RecordsError) as caught:
        mutation_response(single, plan, "[]", 0)
    assert caught.value.code == "PGRST116"
