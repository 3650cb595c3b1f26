"""A write's body as the statement takes it (no database): columns, JSON text, InsForge's `""` quirk."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from kilnbase.records.api_request import ApiRequest
from kilnbase.records.call_plan import call_target
from kilnbase.records.errors import RecordsError
from kilnbase.records.payload import (
    Payload,
    call_arguments,
    insert_payload,
    single_row_payload,
    unparsed_body_error,
)
from kilnbase.records.read_plan import table_target
from tests.records.memory_schema import api_of, memory_snapshot, records_request, rpc_request

pytestmark = pytest.mark.no_postgres

SNAPSHOT = memory_snapshot()


def api(method: str, body: bytes, query_string: str = "", /, **headers: str) -> ApiRequest:
    return api_of(records_request(method, "posts", query_string, body, **headers))


def inserted(body: bytes, query_string: str = "", /, **headers: str) -> Payload:
    request = api("POST", body, query_string, **headers)
    return insert_payload(request, table_target(request.shape, SNAPSHOT))


def test_a_json_body_is_passed_on_as_received() -> None:
    assert inserted(b'{"title": "a"}') == Payload(("title",), '[{"title": "a"}]')
    bulk = b' [{"title": "a"}, {"title": "b"}] '
    assert inserted(bulk) == Payload(("title",), bulk.decode())


def test_columns_of_every_row_first_seen_first() -> None:
    payload = inserted(b'[{"title": "a"}, {"score": 1, "title": "b"}]')
    assert payload.columns == ("title", "score")


def test_named_columns_pass_an_array_unparsed() -> None:
    body = b'[{"title": "a", "ignored": 1}, 5]'  # Postgres checks it
    payload = inserted(body, "columns=title,score")
    assert payload == Payload(("title", "score"), body.decode(), None, unparsed=True)
    # A table with encrypted columns parses it to encrypt it: its shape is said as the parsed path says it.
    refused = unparsed_body_error(payload)
    assert refused is not None and (refused.code, refused.message) == (
        "PGRST102",
        "All object keys must match",
    )
    assert unparsed_body_error(inserted(b'[{"title": "a"}]', "columns=title")) is None
    assert unparsed_body_error(inserted(b'[{"title": 5}]')) is None  # (parsed here: not this check's)


def test_the_empty_string_quirk_drops_non_text_values() -> None:
    payload = inserted(b'{"title": "", "score": "", "meta": ""}')
    assert payload == Payload(("title",), '[{"title":""}]')


def test_csv_and_form_bodies() -> None:
    assert inserted(b"title,score\na,1\nb,\n", content_type="text/csv") == Payload(
        ("title", "score"), '[{"title":"a","score":"1"},{"title":"b"}]'
    )
    form = inserted(b"title=a&score=2", content_type="application/x-www-form-urlencoded")
    assert form == Payload(("title", "score"), '[{"title":"a","score":"2"}]')


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"title\na,b\n", "All lines must have same number of fields"),  # a key of None: no JSON has one
        (b"title,score\na\n", "All lines must have same number of fields"),  # a null nobody sent
        (b"title\nx\ry\n", "Invalid CSV body"),  # a bare carriage return inside a field
    ],
    ids=["longer-line", "shorter-line", "bare-carriage-return"],
)
def test_a_csv_body_that_does_not_hold_rows_is_refused(body: bytes, message: str) -> None:
    """Each was an exception other than `RecordsError` out of the parse (a 500)."""
    refusals = []
    for query_string in ("", "columns=title"):
        with pytest.raises(RecordsError) as caught:
            inserted(body, query_string, content_type="text/csv")
        refusals.append(caught.value)
    with pytest.raises(RecordsError) as call:
        arguments("POST", body, content_type="text/csv")
    refusals.append(call.value)
    for refused in refusals:
        assert (refused.status, refused.code, refused.message) == (400, "PGRST102", message)


def test_a_csv_field_may_be_longer_than_the_csv_modules_limit() -> None:
    """The csv module refuses a field over 128 kB (an exception, so a 500); JSON takes the same text."""
    long_text = "y" * 200_000
    payload = inserted(f"title\n{long_text}\n".encode(), content_type="text/csv")
    assert payload == Payload(("title",), orjson.dumps([{"title": long_text}]).decode())


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", {}, 400, "PGRST102"),
        (b"[1, 2]", {}, 400, "PGRST102"),
        (b'"text"', {}, 400, "PGRST102"),
        (b"<a/>", {"content_type": "application/xml"}, 415, "PGRST102"),
        (b'{"nope": 1}', {}, 400, "PGRST204"),
    ],
)
def test_refusals(body: bytes, headers: dict[str, str], status: int, code: str) -> None:
    with pytest.raises(RecordsError) as caught:
        inserted(body, **headers)
    assert (caught.value.status, caught.value.code) == (status, code)


def test_a_single_row_body() -> None:
    request = api("PATCH", b'{"title": "x", "score": ""}', "id=eq.1")
    target = table_target(request.shape, SNAPSHOT)
    assert single_row_payload(request, target, as_array=False) == Payload(
        ("title",), '{"title":"x"}', {"title": "x"}
    )
    put = single_row_payload(api("PUT", b'{"id": 1}', "id=eq.1"), target, as_array=True)
    assert put == Payload(("id",), '[{"id": 1}]', {"id": 1})
    with pytest.raises(RecordsError) as caught:
        single_row_payload(api("PATCH", b'[{"title": "x"}]'), target, as_array=False)
    assert caught.value.code == "PGRST102"


def arguments(method: str, body: bytes, query_string: str = "", **headers: str) -> tuple[Any, ...]:
    api_value = api_of(rpc_request(method, "add_numbers", query_string, body, **headers))
    found = call_arguments(api_value, call_target(api_value.shape, SNAPSHOT))
    if found.kind not in ("text", "xml", "bytea"):
        assert orjson.loads(found.by_name) == found.named  # what the statement reads the names from
    return found.named, found.whole, found.kind


def test_call_arguments() -> None:
    assert arguments("POST", b'{"a": 1}') == ({"a": 1}, '{"a": 1}', "json")
    assert arguments("POST", b"") == ({}, "{}", "json")
    assert arguments("POST", b"[1]") == ({}, "[1]", "json")
    assert arguments("GET", b"", "a=1&b=2") == ({"a": "1", "b": "2"}, '{"a":"1","b":"2"}', None)
    # Raw bodies name no argument: only a single unnamed parameter of their type takes them.
    assert arguments("POST", b"hi", content_type="text/plain") == ({}, "hi", "text")
    assert arguments("POST", b"<a/>", content_type="text/xml") == ({}, "<a/>", "xml")
    assert arguments("POST", b"\x00\xff", content_type="application/octet-stream") == (
        {},
        b"\x00\xff",
        "bytea",
    )
    assert arguments("POST", b"a=1", content_type="application/x-www-form-urlencoded")[0] == {"a": "1"}
    assert arguments("POST", b"a,b\n1,2\n", content_type="text/csv")[0] == {"a": "1", "b": "2"}
    with pytest.raises(RecordsError) as caught:
        arguments("POST", b"x", content_type="application/pdf")
    assert (caught.value.status, caught.value.code) == (415, "PGRST102")
    with pytest.raises(RecordsError) as caught:
        arguments("POST", b"{nope")
    assert (caught.value.status, caught.value.code) == (400, "PGRST102")
