"""The URL grammar on strings alone (no database): what parses to what, and what is refused with PGRST100."""

from __future__ import annotations

import pytest

from kilnbase.records.errors import RecordsError
from kilnbase.records.query_grammar import (
    Field,
    Filter,
    JsonStep,
    Operation,
    OrderTerm,
    parse_field,
    parse_order,
    parse_query,
    parse_range_header,
)

pytestmark = pytest.mark.no_postgres


def refusal(pairs: list[tuple[str, str]]) -> RecordsError:
    with pytest.raises(RecordsError) as caught:
        parse_query(pairs)
    return caught.value


@pytest.mark.parametrize(
    "pairs",
    [
        [("limit", "²")],
        [("offset", "³")],
        [("comments.limit", "٣")],
        [("limit", "1" * 19)],
        [("select", "meta->²")],
        [("select", "meta->>٣")],
        [("select", "alias:meta->a->²")],
        [("meta->>²", "eq.1")],
        [("or", "(meta->>².eq.1,id.eq.1)")],
        [("order", "meta->².desc")],
    ],
)
def test_non_ascii_digits_are_parse_errors(pairs: list[tuple[str, str]]) -> None:
    error = refusal(pairs)
    assert (error.status, error.code) == (400, "PGRST100")


def test_ascii_paging_parses() -> None:
    query = parse_query([("limit", "10"), ("offset", "5"), ("comments.limit", "2")])
    assert query.limit == {(): 10, ("comments",): 2}
    assert query.offset == {(): 5}


def test_json_path_keys_and_indexes() -> None:
    assert parse_field("meta->a->>0") == Field("meta", (JsonStep("->", "a"), JsonStep("->>", "0")))
    # Quoted, a key may be anything, digits of any script included.
    assert parse_field('meta->"²"') == Field("meta", (JsonStep("->", "²"),))
    # Letters of any script are keys as before, and so is a key that only looks like a signed number.
    assert parse_field("meta->é->--5") == Field("meta", (JsonStep("->", "é"), JsonStep("->", "--5")))


def test_a_filter_and_an_order_on_a_json_path() -> None:
    query = parse_query([("meta->>lang", "eq.en"), ("order", "meta->views.desc.nullslast")])
    assert query.conditions == {
        (): [Filter(Field("meta", (JsonStep("->>", "lang"),)), Operation("eq", "en"))]
    }
    assert parse_order("meta->views.desc.nullslast") == [
        OrderTerm(Field("meta", (JsonStep("->", "views"),)), None, True, "last")
    ]


@pytest.mark.parametrize("header", ["²-³", "\u0663-\u0665", "1-²", "items=-1"])
def test_a_range_header_takes_ascii_digits_only(header: str) -> None:
    with pytest.raises(RecordsError) as caught:
        parse_range_header(header)
    assert (caught.value.status, caught.value.code) == (416, "PGRST103")


def test_range_headers() -> None:
    assert parse_range_header("0-9") == (0, 9)
    assert parse_range_header("items=10-") == (10, None)
