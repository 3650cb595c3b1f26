"""What memory takes from a model's answers, without a model: the JSON found in prose or a fence, candidates
checked field by field, and a reconciliation that is an ADD unless it can be used as it stands."""

from __future__ import annotations

import pytest

from kilnbase.memory.model_output import (
    MAX_EXTRACTED,
    Candidate,
    Decision,
    candidates,
    decision,
    first_object,
)

SHOWN = frozenset({"11111111-1111-4111-8111-111111111111"})
TARGET = "11111111-1111-4111-8111-111111111111"


@pytest.mark.parametrize(
    ("answer", "found"),
    [
        ('{"a": 1}', {"a": 1}),
        ('Sure:\n```json\n{"a": [1, 2]}\n```\nDone.', {"a": [1, 2]}),
        ('Here: {"a": {"b": "}"}} trailing', {"a": {"b": "}"}}),
        ("no json here", None),
        ('{"a": ', None),
        ("[1, 2]", None),
        ("} backwards {", None),
    ],
)
def test_the_first_object_of_an_answer(answer: str, found: object) -> None:
    assert first_object(answer) == found


def test_candidates_are_checked_one_by_one() -> None:
    answer = (
        '{"memories": [{"kind": "decision", "title": " t1 ", "content": " c1 "},'
        ' {"kind": "rumour", "title": "t2", "content": "c2"}, {"title": "t3"}, {"content": "c4"},'
        ' 7, {"title": 5, "content": "c6"}, {"title": "t7", "content": "' + "x" * 30_000 + '"}]}'
    )
    found = candidates(answer)
    assert found[:2] == [Candidate("decision", "t1", "c1"), Candidate("fact", "t2", "c2")]
    assert found[2].title == "t7" and len(found[2].content) == 20_000
    assert len(found) == 3


@pytest.mark.parametrize("answer", ["nothing", '{"memories": "none"}', '{"other": []}', "[]"])
def test_an_unreadable_extraction_yields_nothing(answer: str) -> None:
    assert candidates(answer) == []


def test_an_extraction_is_capped() -> None:
    many = ",".join(f'{{"title": "t{i}", "content": "c{i}"}}' for i in range(MAX_EXTRACTED + 10))
    assert len(candidates('{"memories": [' + many + "]}")) == MAX_EXTRACTED


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('{"action": "NOOP"}', Decision("NOOP")),
        ('{"action": "noop "}', Decision("NOOP")),
        (
            f'{{"action": "UPDATE", "target_id": "{TARGET.upper()}", "title": "new", "content": "merged"}}',
            Decision("UPDATE", TARGET, "new", "merged"),
        ),
        (
            f'{{"action": "UPDATE", "target_id": "{TARGET}", "title": 3}}',
            Decision("UPDATE", TARGET, None, None),
        ),
        ('{"action": "UPDATE", "target_id": "22222222-2222-4222-8222-222222222222"}', Decision("ADD")),
        ('{"action": "UPDATE"}', Decision("ADD")),
        ('{"action": "ADD"}', Decision("ADD")),
        ('{"action": "DELETE", "target_id": "' + TARGET + '"}', Decision("ADD")),
        ("I would add it.", Decision("ADD")),
        ("", Decision("ADD")),
    ],
)
def test_a_reconciliation_is_an_add_unless_it_can_be_used(answer: str, expected: Decision) -> None:
    assert decision(answer, SHOWN) == expected


def test_a_models_nul_characters_are_dropped() -> None:
    """A model may write `\\u0000` as any client may; Postgres's text cannot hold it."""
    found = candidates('{"memories": [{"kind": "fact", "title": "a\\u0000b", "content": "c\\u0000"}]}')
    assert found == [Candidate("fact", "ab", "c")]
