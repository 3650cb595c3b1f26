"""The change-events channel grammar and its PostgREST-style filter, without a database."""

from __future__ import annotations

import pytest

from kilnbase.realtime.change_filter import BadSubscription, parse_channel


def test_a_channel_names_a_table_and_optionally_a_filter_and_event() -> None:
    plain = parse_channel("postgres_changes:public:todos")
    assert (plain.schema, plain.table, plain.event, plain.filter) == ("public", "todos", "*", None)
    assert plain.wants("DELETE", {}, {"id": 1})
    filtered = parse_channel("postgres_changes:public:todos:owner=eq.42", "insert")
    assert filtered.event == "INSERT"
    assert filtered.wants("INSERT", {"owner": 42}, {})
    assert not filtered.wants("INSERT", {"owner": 43}, {})
    assert not filtered.wants("UPDATE", {"owner": 42}, {})


@pytest.mark.parametrize(
    ("condition", "row", "expected"),
    [
        ("n=gt.5", {"n": 6}, True),
        ("n=gt.5", {"n": 5}, False),
        ("n=gte.5", {"n": 5.0}, True),
        ("n=lt.10", {"n": 2}, True),
        ("n=lte.1", {"n": 2}, False),
        ("s=neq.a", {"s": "b"}, True),
        ("s=neq.a", {"s": None}, False),
        ("s=eq.null", {"s": None}, True),
        ("s=in.(a,b)", {"s": "b"}, True),
        ("s=in.(a,b)", {"s": "c"}, False),
        ("n=in.(1,2)", {"n": 2}, True),
        ("done=eq.true", {"done": True}, True),
        ("s=lt.b", {"s": "a"}, True),
        ("missing=eq.1", {"n": 1}, False),
    ],
)
def test_filters_compare_as_the_column_type(condition: str, row: dict[str, object], expected: bool) -> None:
    assert parse_channel(f"postgres_changes:public:t:{condition}").wants("INSERT", row, {}) is expected


@pytest.mark.parametrize(
    ("channel", "event"),
    [
        ("postgres_changes:public", "*"),
        ("postgres_changes:pub lic:t", "*"),
        ("postgres_changes:public:t:n=like.x", "*"),
        ("postgres_changes:public:t:n=in.1,2", "*"),
        ("postgres_changes:public:t", "TRUNCATE"),
        ("postgres_changes:public:t", 3),
    ],
)
def test_bad_channels_are_refused(channel: str, event: object) -> None:
    with pytest.raises(BadSubscription):
        parse_channel(channel, event)
