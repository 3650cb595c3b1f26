"""Stage two without a database: read, write and call plans as plain data, and what they refuse."""

from __future__ import annotations

from typing import Any

import pytest

from kilnbase.db.schema_cache import Parameter, Routine
from kilnbase.records.api_request import RequestShape
from kilnbase.records.call_plan import CallPlan, call_plan, call_target, check_call, choose_routine
from kilnbase.records.errors import RecordsError
from kilnbase.records.mutate_plan import (
    MutatePlan,
    check_upsert_row,
    delete_plan,
    insert_plan,
    update_plan,
    upsert_key,
)
from kilnbase.records.read_plan import read_plan, table_target
from tests.records.memory_schema import memory_snapshot, records_request, rpc_request, shape_of

pytestmark = pytest.mark.no_postgres

SNAPSHOT = memory_snapshot()


def shape(method: str, resource: str, query_string: str = "", /, **headers: str) -> RequestShape:
    return shape_of(records_request(method, resource, query_string, **headers))


def call_shape(method: str, function: str, query_string: str = "", /, **headers: str) -> RequestShape:
    return shape_of(rpc_request(method, function, query_string, **headers))


def refused(make: Any, *args: Any) -> tuple[int, str]:
    with pytest.raises(RecordsError) as caught:
        make(*args)
    return caught.value.status, caught.value.code


def test_a_read_plan() -> None:
    read = shape("GET", "authors", "select=name,posts(title)&posts.order=id&limit=3")
    plan = read_plan(read, SNAPSHOT, table_target(read, SNAPSHOT))
    assert (plan.offset, plan.limit) == (0, 3)
    node = plan.node
    assert [c.name for c in node.columns] == ["name"]
    (embed,) = node.embeds
    assert (embed.output_name, embed.relationship.kind, embed.node.table) == (
        "posts",
        "o2m",
        SNAPSHOT.tables[("public", "posts")],
    )
    assert [t.field.name for t in embed.node.order] == ["id"]


@pytest.mark.parametrize(
    ("query_string", "status", "code"),
    [
        ("select=nope", 400, "42703"),
        ("select=id,nothing(*)", 400, "PGRST200"),
        ("comments.id=eq.1", 400, "PGRST108"),
        ("select=id,authors(*)&order=authors(nope)", 400, "42703"),
    ],
)
def test_read_plan_refusals(query_string: str, status: int, code: str) -> None:
    read = shape("GET", "posts", query_string)
    assert refused(lambda: read_plan(read, SNAPSHOT, table_target(read, SNAPSHOT))) == (status, code)


def test_an_unknown_table_is_404_with_a_suggestion() -> None:
    read = shape("GET", "post")
    with pytest.raises(RecordsError) as caught:
        table_target(read, SNAPSHOT)
    assert (caught.value.status, caught.value.code, caught.value.hint) == (
        404,
        "PGRST205",
        "Perhaps you meant the table 'public.posts'",
    )


def insert(query_string: str = "", columns: tuple[str, ...] = ("title",), **headers: str) -> MutatePlan:
    write = shape("POST", "posts", query_string, **headers)
    return insert_plan(write, SNAPSHOT, table_target(write, SNAPSHOT), columns)


def test_insert_plans() -> None:
    plain = insert()
    assert (plain.kind, plain.counts_inserted, plain.representation, plain.returning, plain.on_conflict) == (
        "insert",
        False,
        False,
        None,
        None,
    )
    assert not (plain.check_first or plain.location or plain.missing_default)
    shown = insert("select=id", prefer="return=representation")
    assert shown.representation and shown.returning is not None
    assert [c.name for c in shown.returning.columns] == ["id"]
    located = insert(prefer="return=headers-only")
    assert located.location and located.representation
    single = insert(accept="application/vnd.pgrst.object+json")
    assert single.representation and single.check_first
    assert insert(accept="application/vnd.pgrst.object+json", prefer="return=minimal").representation is False
    strict = insert(prefer="handling=strict,max-affected=2")
    assert strict.check_first
    merged = insert("on_conflict=title", prefer="resolution=merge-duplicates,missing=default")
    assert (merged.on_conflict, merged.resolution, merged.missing_default, merged.counts_inserted) == (
        ("title",),
        "merge-duplicates",
        True,
        True,
    )
    assert insert(prefer="resolution=ignore-duplicates").on_conflict == ("id",)


def test_insert_refusals() -> None:
    with pytest.raises(RecordsError) as caught:
        insert("on_conflict=nope", prefer="resolution=merge-duplicates")
    assert caught.value.code == "42703"
    with pytest.raises(RecordsError) as caught:
        insert("select=nope", prefer="return=representation")
    assert caught.value.code == "42703"


def test_update_and_delete_plans() -> None:
    patch = shape("PATCH", "posts", "id=eq.1&select=title", prefer="return=representation")
    target = table_target(patch, SNAPSHOT)
    plan = update_plan(patch, SNAPSHOT, target, ("title",))
    assert (plan.kind, plan.single_upsert, len(plan.conditions), plan.is_noop) == ("update", False, 1, False)
    assert plan.returning is not None
    noop = update_plan(patch, SNAPSHOT, target, ())
    assert noop.is_noop and noop.returning is None and noop.representation
    delete = shape("DELETE", "posts", "author_id=eq.1")
    gone = delete_plan(delete, SNAPSHOT, table_target(delete, SNAPSHOT))
    assert (gone.kind, gone.columns, gone.representation, gone.is_noop) == ("delete", (), False, False)


def test_a_write_filters_on_its_own_columns_only() -> None:
    """No embeds on writes: a filter naming one is a filter on a column the table does not have."""
    delete = shape("DELETE", "posts", "select=id,comments(id)&comments=not.is.null")
    assert refused(lambda: delete_plan(delete, SNAPSHOT, table_target(delete, SNAPSHOT))) == (400, "42703")


@pytest.mark.parametrize(
    ("query_string", "status", "code"),
    [
        ("id=eq.1&limit=1", 400, "PGRST114"),
        ("title=eq.x", 405, "PGRST105"),
        ("id=gt.1", 405, "PGRST105"),
        ("id=eq.1&title=eq.x", 405, "PGRST105"),
    ],
)
def test_a_put_names_its_row_by_primary_key(query_string: str, status: int, code: str) -> None:
    put = shape("PUT", "posts", query_string)
    assert refused(upsert_key, table_target(put, SNAPSHOT)) == (status, code)


def test_a_put_body_repeats_its_key() -> None:
    put = shape("PUT", "posts", "id=eq.1")
    key = upsert_key(table_target(put, SNAPSHOT))
    assert key == {"id": "1"}
    check_upsert_row({"id": 1, "title": "x"}, key)
    assert refused(check_upsert_row, {"id": 2}, key) == (400, "PGRST115")
    assert refused(check_upsert_row, {"title": "x"}, key) == (400, "PGRST115")
    plan = insert_plan(put, SNAPSHOT, table_target(put, SNAPSHOT), ("id", "title"), upsert=True)
    assert (plan.single_upsert, plan.counts_inserted, plan.on_conflict, plan.resolution) == (
        True,
        True,
        ("id",),
        "merge-duplicates",
    )
    # PostgREST ignores `resolution=` on a table with no conflict target: a plain insert.
    keyless = shape("POST", "posts", "", prefer="resolution=merge-duplicates")
    plain = insert_plan(keyless, SNAPSHOT, table_target(keyless, SNAPSHOT), ("title",))
    assert plain.resolution is not None  # (posts has a primary key)


def call(method: str, name: str, args: dict[str, Any], query_string: str = "", **headers: str) -> CallPlan:
    request = call_shape(method, name, query_string, **headers)
    return call_plan(request, SNAPSHOT, call_target(request, SNAPSHOT), args)


def test_routine_choice() -> None:
    plan = call("POST", "add_numbers", {"a": 1})
    assert (plan.routine.name, plan.arg_names, plan.read, plan.read_only) == (
        "add_numbers",
        ("a",),
        None,
        True,
    )
    assert call("POST", "add_numbers", {"b": 2, "a": 1}).arg_names == ("a", "b")
    whole_body = call("POST", "echo_json", {"x": 1, "y": 2})
    assert whole_body.arg_names == () and whole_body.positional
    table_typed = call("GET", "posts_by", {"author": "1"}, "author=1&select=id&limit=2")
    assert table_typed.read is not None and (table_typed.read.offset, table_typed.read.limit) == (0, 2)
    assert not table_typed.single_value
    assert call("POST", "touch", {}).read_only is False  # volatile, called with POST
    assert call("GET", "touch", {}).read_only is True


@pytest.mark.parametrize(
    ("name", "args", "status", "code"),
    [
        ("add_numbers", {"z": 1}, 404, "PGRST202"),
        ("add_numbers", {"b": 1}, 404, "PGRST202"),
        ("nothing", {}, 404, "PGRST202"),
        ("twice", {"x": 1}, 300, "PGRST203"),
    ],
)
def test_routine_choice_refusals(name: str, args: dict[str, Any], status: int, code: str) -> None:
    assert refused(call, "POST", name, args) == (status, code)


def test_overloads_are_resolved_as_postgrest_resolves_them() -> None:
    """PostgREST's `findProc`: the overload the argument names fit, else the one whose single unnamed
    parameter takes this kind of body; ambiguity lists the candidates fewest parameters first."""
    json_param = Parameter("", "json", False)
    overloads = [
        Routine(
            "public",
            "f",
            (Parameter("x", "integer", False), Parameter("y", "integer", False)),
            "integer",
            "scalar",
            False,
            "i",
            None,
        ),
        Routine("public", "f", (json_param,), "json", "scalar", False, "i", None),
        Routine("public", "f", (Parameter("", "text", False),), "text", "scalar", False, "i", None),
        Routine("public", "f", (), "integer", "scalar", False, "i", None),
    ]
    assert choose_routine("public", "f", overloads, set(), "json").parameters == ()
    assert len(choose_routine("public", "f", overloads, {"x", "y"}, "json").parameters) == 2
    assert choose_routine("public", "f", overloads, {"a"}, "json").parameters == (json_param,)
    assert choose_routine("public", "f", overloads, set(), "text").parameters[0].type == "text"
    # `{"": ...}` names the unnamed parameter of both one-parameter overloads: PostgREST cannot choose.
    assert refused(choose_routine, "public", "f", overloads, {""}, "json") == (300, "PGRST203")
    assert choose_routine("public", "f", overloads[:2], {""}, "json").parameters == (json_param,)
    with pytest.raises(RecordsError) as caught:
        choose_routine("public", "f", overloads, {"a"}, "csv")
    assert (caught.value.status, caught.value.message) == (
        404,
        "Could not find the function public.f(a) in the schema cache",
    )
    with pytest.raises(RecordsError) as caught:
        choose_routine("public", "f", overloads, set(), "bytea")
    assert caught.value.message == "Could not find the function public.f in the schema cache"
    assert caught.value.details == (
        "Searched for the function public.f with a single unnamed bytea parameter, but no matches were found"
        " in the schema cache."
    )
    both = [
        Routine("public", "g", (Parameter("", t, False),), t, "scalar", False, "i", None)
        for t in ("jsonb", "json")
    ]
    with pytest.raises(RecordsError) as caught:
        choose_routine("public", "g", both, {"a"}, "json")
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        300,
        "PGRST203",
        "Could not choose the best candidate function between: public.g( => json), public.g( => jsonb)",
    )
    # A function with an unnamed parameter PostgREST could never pass a body to is not listed at all.
    unnamed_int = [
        Routine("public", "h", (Parameter("", "integer", False),), "integer", "scalar", False, "i", None)
    ]
    with pytest.raises(RecordsError) as caught:
        choose_routine("public", "h", unnamed_int, {""}, "json")
    assert caught.value.code == "PGRST202"


def test_only_get_and_post_call() -> None:
    request = call_shape("DELETE", "add_numbers")
    assert refused(call_target, request, SNAPSHOT) == (405, "PGRST101")


def test_get_arguments_are_query_parameters_post_arguments_are_not() -> None:
    get = call_shape("GET", "add_numbers", "a=1&b=2&select=x")
    assert call_target(get, SNAPSHOT).query.function_args == {"a": "1", "b": "2"}
    post = call_shape("POST", "add_numbers", "a=1")
    with pytest.raises(RecordsError):  # `a` is then a filter on a column the result does not have
        call_plan(post, SNAPSHOT, call_target(post, SNAPSHOT), {"a": 1})


def test_strict_max_affected_needs_a_set() -> None:
    strict = call_shape("POST", "add_numbers", prefer="handling=strict,max-affected=1")
    plan = call_plan(strict, SNAPSHOT, call_target(strict, SNAPSHOT), {"a": 1})
    assert refused(check_call, strict, plan) == (400, "PGRST128")
    titles = call_shape("POST", "post_titles", prefer="handling=strict,max-affected=1")
    check_call(titles, call_plan(titles, SNAPSHOT, call_target(titles, SNAPSHOT), {}))
