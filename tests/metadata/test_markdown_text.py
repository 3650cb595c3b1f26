"""The markdown's small text rules, without a database."""

from __future__ import annotations

from kilnbase.metadata.markdown import _short, _type


def test_redundant_parentheses_and_text_casts_go() -> None:
    assert _short("((status = 'published'::text))") == "status = 'published'"
    assert _short("(a = 1) AND (b = 2)") == "(a = 1) AND (b = 2)"  # the outer pair is not one
    assert _short("((a = 1) AND (b = 2))") == "(a = 1) AND (b = 2)"
    assert _short("(name = 'it''s'::character varying)") == "name = 'it''s'"
    assert _short(None) == ""


def test_long_expressions_are_cut() -> None:
    text = _short("x = " + "1" * 500)
    assert len(text) == 160 and text.endswith("…")


def test_type_names_are_short() -> None:
    assert _type("timestamp with time zone") == "timestamptz"
    assert _type("character varying(20)[]") == "varchar(20)[]"
    assert _type("jsonb") == "jsonb"
