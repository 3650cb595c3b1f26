"""What memory reads of the gateway's answers when a provider shapes them oddly: no text, or the embeddings'
own order, rather than an exception (a 500) on a shape the provider should not have sent."""

from __future__ import annotations

from typing import Any

import pytest

from kilnbase.ai.model_calls import _first_text, _index


@pytest.mark.parametrize(
    ("choices", "text"),
    [
        ([{"message": {"content": "hi"}}], "hi"),
        ([], None),
        (None, None),
        ("choices", None),
        (["not an object"], None),
        ([{"message": "not an object"}], None),
        ([{"message": {"content": 7}}], None),
        ([{}], None),
    ],
)
def test_the_first_choices_text(choices: Any, text: str | None) -> None:
    assert _first_text(choices) == text


@pytest.mark.parametrize(
    ("item", "index"),
    [({"index": 2}, 2), ({"index": "2"}, 0), ({"index": True}, 0), ({}, 0), ("x", 0), ({"index": None}, 0)],
)
def test_an_embeddings_place(item: Any, index: int) -> None:
    assert _index(item) == index
