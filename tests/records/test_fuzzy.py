"""PostgREST's "Perhaps you meant" hints, from its `ErrorSpec` and `RpcSpec`: the fuzzy set's choice."""

from __future__ import annotations

import pytest

from kilnbase.records.fuzzy import NAME_SCORE, PARAMS_SCORE, closest

pytestmark = pytest.mark.no_postgres

TABLES = ["projects", "clients", "tasks", "users", "project_invoices", "projects_view"]


@pytest.mark.parametrize(
    ("wanted", "found"), [("projectx", "projects"), ("projecxx", "projects"), ("projxxxx", None)]
)
def test_table_names_need_three_quarters_alike(wanted: str, found: str | None) -> None:
    assert closest(wanted, TABLES, NAME_SCORE) == found


def test_function_names() -> None:
    functions = [
        "sayhello",
        "unnamed_json_param",
        "unnamed_text_param",
        "unnamed_xml_param",
        "unnamed_bytea_param",
    ]
    assert closest("sayhell", functions, NAME_SCORE) == "sayhello"
    assert closest("unnamed_int_param", functions, NAME_SCORE) == "unnamed_text_param"
    assert closest("nothing_alike", functions, NAME_SCORE) is None
    assert closest("SayHello", functions, NAME_SCORE) == "sayhello"  # (an exact match, whatever the case)


#: The parameter lists of RpcSpec's `overloaded` (its unnamed json overload lists as `()`).
OVERLOADED = ["()", "(a, b)", "(a, b, c)"]


@pytest.mark.parametrize(
    ("given", "lists", "found"),
    [
        ("(nam)", ["(name)"], "(name)"),
        ("(a, b, smthelse)", ["(a, b)"], "(a, b)"),
        ("(wrong_arg)", OVERLOADED, None),
        ("(a, b, wrong_arg)", OVERLOADED, "(a, b, c)"),
    ],
)
def test_parameter_lists_take_a_third(given: str, lists: list[str], found: str | None) -> None:
    assert closest(given, lists, PARAMS_SCORE) == found
