"""Stage one without a database: a request's shape, every header normalised before anything keys on it."""

from __future__ import annotations

import pytest

from kilnbase.records import media_type
from kilnbase.records.api_request import (
    MAX_REMEMBERED_URL,
    api_request,
    query_pairs,
    request_shape,
    shape_key,
)
from kilnbase.records.errors import RecordsError
from kilnbase.records.preferences import Preferences
from tests.records.memory_schema import records_request, rpc_request

SCHEMAS = ("public", "other")

pytestmark = pytest.mark.no_postgres


def test_a_shape_is_the_request_parsed() -> None:
    request = records_request(
        "GET",
        "posts",
        "select=id&limit=2",
        accept="text/csv",
        prefer="count=exact",
        range="1-",
        accept_profile="other",
    )
    key = shape_key(request, SCHEMAS)
    assert key == (
        "GET",
        False,
        "posts",
        "select=id&limit=2",
        "other",
        Preferences(count="exact"),
        "text/csv",
        (1, None),
    )
    shape = request_shape(request, SCHEMAS, key)
    assert (shape.action, shape.schema, shape.prefs.count, shape.media, shape.range) == (
        "read",
        "other",
        "exact",
        media_type.CSV,
        (1, None),
    )
    assert not shape.head


@pytest.mark.parametrize(
    ("method", "is_rpc", "action"),
    [
        ("GET", False, "read"),
        ("HEAD", False, "read"),
        ("POST", False, "insert"),
        ("PATCH", False, "update"),
        ("PUT", False, "upsert"),
        ("DELETE", False, "delete"),
        ("OPTIONS", False, None),
        ("GET", True, "call"),
        ("POST", True, "call"),
    ],
)
def test_the_action_of_a_method(method: str, is_rpc: bool, action: str | None) -> None:
    request = (rpc_request if is_rpc else records_request)(method, "posts")
    assert request_shape(request, SCHEMAS, shape_key(request, SCHEMAS)).action == action


@pytest.mark.parametrize(
    "prefer",
    [
        "return=representation",
        "return=representation, x-unknown=1",
        "return=representation,timezone=UTC,tx=commit",
        " RETURN = representation ,count=sideways,max-affected=²",
        "return=representation," + "x" * 1_000_000,
    ],
)
def test_the_key_holds_normalised_preferences_never_the_header(prefer: str) -> None:
    """Issue 10, item 6: unknown preferences are dropped before keying, so unique (even huge) `Prefer`
    headers are one key, of a size the client does not choose."""
    key = shape_key(records_request("POST", "posts", prefer=prefer), SCHEMAS)
    assert key == (
        "POST",
        False,
        "posts",
        "",
        None,
        Preferences(return_="representation"),
        media_type.JSON,
        None,
    )


@pytest.mark.parametrize(
    "accept",
    [None, "application/json", "*/*", "application/json, text/csv;q=0.5", "application/*;q=0.9, image/png"],
)
def test_the_key_holds_the_negotiated_media_type(accept: str | None) -> None:
    headers = {} if accept is None else {"accept": accept}
    key = shape_key(records_request("GET", "posts", **headers), SCHEMAS)
    assert key is not None and key[6] == media_type.JSON


def test_content_type_and_a_range_on_a_write_are_not_in_the_key() -> None:
    plain = shape_key(records_request("POST", "posts"), SCHEMAS)
    assert plain is not None
    for headers in ({"content_type": "text/csv"}, {"range": "0-9"}, {"range": "nonsense"}):
        assert shape_key(records_request("POST", "posts", **headers), SCHEMAS) == plain


@pytest.mark.parametrize(
    ("headers", "query_string"),
    [
        ({"accept_profile": "auth"}, ""),  # not exposed: refused when the shape is built
        ({"accept": "application/xml"}, ""),
        ({"prefer": "handling=strict, x=1"}, ""),
        ({"range": "9-1"}, ""),
        ({}, "select=" + "x" * MAX_REMEMBERED_URL),
    ],
)
def test_what_is_not_remembered(headers: dict[str, str], query_string: str) -> None:
    assert shape_key(records_request("GET", "posts", query_string, **headers), SCHEMAS) is None


@pytest.mark.parametrize(
    ("headers", "query_string", "code"),
    [
        # PostgREST's order: the schema, the preferences, the media type.
        (
            {"accept_profile": "auth", "accept": "application/xml", "prefer": "handling=strict,x"},
            "",
            "PGRST106",
        ),
        ({"accept": "application/xml", "prefer": "handling=strict,x"}, "", "PGRST122"),
        ({"accept": "application/xml"}, "", "PGRST107"),
        ({"accept_profile": "public"}, "schema=ai", "PGRST106"),
        ({}, "a=%00", "PGRST100"),
    ],
)
def test_refusals_in_order(headers: dict[str, str], query_string: str, code: str) -> None:
    request = records_request("GET", "posts", query_string, **headers)
    with pytest.raises(RecordsError) as caught:
        request_shape(request, SCHEMAS, shape_key(request, SCHEMAS))
    assert caught.value.code == code


def test_an_invalid_schema_lists_only_the_exposed_ones() -> None:
    with pytest.raises(RecordsError) as caught:
        request_shape(records_request("GET", "x", accept_profile="ai"), SCHEMAS, None)
    error = caught.value
    assert (error.status, error.message, error.hint) == (
        406,
        "Invalid schema: ai",
        "Only the following schemas are exposed: public, other",
    )


def test_the_profile_header_follows_the_method() -> None:
    read = records_request("GET", "x", accept_profile="other", content_profile="public")
    write = records_request("POST", "x", accept_profile="public", content_profile="other")
    call = rpc_request("POST", "f", content_profile="other")
    for request in (read, write, call):
        assert request_shape(request, SCHEMAS, shape_key(request, SCHEMAS)).schema == "other"
    query_first = records_request("GET", "x", "schema=public", accept_profile="other")
    assert request_shape(query_first, SCHEMAS, shape_key(query_first, SCHEMAS)).schema == "public"


def test_a_bad_range_is_refused_when_the_page_is_computed() -> None:
    request = records_request("GET", "posts", range="9-1")
    shape = request_shape(request, SCHEMAS, None)
    assert shape.range is None
    assert shape.range_error is not None and shape.range_error.code == "PGRST103"


def test_the_api_request_carries_the_body_and_its_media_type() -> None:
    request = records_request("POST", "posts", "", b"a,b\n", content_type="Text/CSV; charset=utf-8")
    api = api_request(request, request_shape(request, SCHEMAS, shape_key(request, SCHEMAS)))
    assert (api.body, api.content_type) == (b"a,b\n", "text/csv")
    default = records_request("POST", "posts")
    assert api_request(default, request_shape(default, SCHEMAS, None)).content_type == "application/json"


def test_query_pairs_refuse_nul() -> None:
    assert query_pairs("a=1&b=&select=x,y") == [("a", "1"), ("b", ""), ("select", "x,y")]
    with pytest.raises(RecordsError):
        query_pairs("a=%00")
