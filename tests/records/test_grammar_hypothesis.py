"""Property tests of the URL grammar, on strings alone: values round-trip through quoting, every filter in a
query string becomes exactly one condition, and hostile input (quotes, parentheses, SQL fragments, unicode)
is either parsed or refused with PGRST1xx. (`test_grammar_over_http.py` sends the same input to a server.)"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kilnbase.records.errors import RecordsError
from kilnbase.records.query_grammar import (
    Filter,
    parse_field,
    parse_logic_tree,
    parse_operation,
    parse_order,
    parse_query,
    parse_select,
)
from tests.records.hostile_input import hostile_text, plain_text, postgrest_quote

pytestmark = pytest.mark.no_postgres


@settings(deadline=None)
@given(plain_text)
def test_plain_filter_values_are_taken_verbatim(value: str) -> None:
    operation = parse_operation(f"eq.{value}")
    assert operation.operator == "eq"
    assert operation.value == value


@settings(deadline=None)
@given(st.lists(plain_text, max_size=6))
def test_quoted_in_lists_round_trip(values: list[str]) -> None:
    text = "in.(" + ",".join(postgrest_quote(v) for v in values) + ")"
    assert parse_operation(text).value == tuple(values)


@settings(deadline=None)
@given(plain_text)
def test_quoted_values_in_logic_trees_round_trip(value: str) -> None:
    tree = parse_logic_tree("or", False, f"(title.eq.{postgrest_quote(value)},id.eq.1)")
    first = tree.children[0]
    assert isinstance(first, Filter)
    assert first.operation.value == value


def _refusal(parse: Any, text: Any) -> RecordsError | None:
    try:
        parse(text)
    except RecordsError as exc:
        return exc
    return None


@settings(deadline=None)
@given(hostile_text)
def test_hostile_input_parses_or_is_refused_cleanly(text: str) -> None:
    for parse in (parse_select, parse_order, lambda t: parse_logic_tree("and", False, t), parse_operation):
        error = _refusal(parse, text)
        if error is not None:
            assert error.status in (400, 416)
            assert error.code.startswith("PGRST")


def filters_named(pairs: list[tuple[str, str]]) -> int:
    """How many conditions a query string names: every key but the reserved ones and (outside a JSON path)
    `order`, `limit` and `offset`, at any embed path."""
    count = 0
    for key, _ in pairs:
        head, arrow, _ = key.partition("->")
        if key in ("select", "on_conflict", "columns", "schema"):
            continue
        if not arrow and head.split(".")[-1] in ("order", "limit", "offset"):
            continue
        count += 1
    return count


@settings(deadline=None)
@given(st.lists(st.tuples(hostile_text, hostile_text), max_size=4))
def test_whole_query_strings_parse_to_one_condition_per_filter_or_are_refused(
    pairs: list[tuple[str, str]],
) -> None:
    error = _refusal(parse_query, pairs)
    if error is not None:
        assert error.status in (400, 416)
        assert error.code.startswith("PGRST")
        return
    query = parse_query(pairs)
    assert sum(len(conditions) for conditions in query.conditions.values()) == filters_named(pairs)


@settings(deadline=None)
@given(
    st.lists(st.text(alphabet="abcdefgh_", min_size=1, max_size=6), min_size=1, max_size=3),
    plain_text,
)
def test_a_filter_lands_at_its_embed_path_with_its_value(path: list[str], value: str) -> None:
    *embeds, column = path
    query = parse_query([(".".join(path), f"eq.{value}")])
    assert query.conditions == {tuple(embeds): [Filter(parse_field(column), parse_operation(f"eq.{value}"))]}
    assert parse_operation(f"eq.{value}").value == value
