"""Stage two, functions: which routine a call runs and how its result is read (PostgREST's `CallPlan`).

The routine and the plan depend on the request's shape and on which parameters the arguments name, never
on their values: the arguments travel to the statement as one JSON parameter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kilnbase.db.schema_cache import Routine, SchemaSnapshot
from kilnbase.records.api_request import RequestShape, query_pairs
from kilnbase.records.errors import RecordsError
from kilnbase.records.query_grammar import QueryParams, parse_query
from kilnbase.records.read_plan import ReadPlan, build_read_plan, page


@dataclass(frozen=True, slots=True)
class CallTarget:
    """The overloads a call's name resolves to, the parameter names any of them has, and the query."""

    overloads: tuple[Routine, ...]
    parameter_names: frozenset[str]
    query: QueryParams  # for GET, the arguments are in `query.function_args`


def call_target(shape: RequestShape, snapshot: SchemaSnapshot) -> CallTarget:
    if shape.method not in ("GET", "HEAD", "POST"):
        raise RecordsError(405, "PGRST101", "Only GET and POST verbs are allowed for functions")
    overloads = tuple(snapshot.routines.get((shape.schema, shape.resource), ()))
    names = frozenset(p.name for r in overloads for p in r.parameters if p.name)
    # With GET the arguments are query parameters; with POST they are the body.
    query = parse_query(query_pairs(shape.query_string), names if shape.method != "POST" else frozenset())
    return CallTarget(overloads, names, query)


@dataclass(frozen=True, slots=True)
class CallPlan:
    """A call of `routine` with the arguments `arg_names` (all of the body for a single unnamed json
    parameter). A table-typed result is read like a table: `read` is its tree and page."""

    routine: Routine
    arg_names: tuple[str, ...]
    read: ReadPlan | None
    read_only: bool

    @property
    def single_value(self) -> bool:
        return not self.routine.returns_set


def call_plan(
    shape: RequestShape, snapshot: SchemaSnapshot, target: CallTarget, args: Mapping[str, Any]
) -> CallPlan:
    routine = choose_routine(shape.schema, shape.resource, target.overloads, args)
    arg_names = (
        () if routine.single_unnamed_json else tuple(p.name for p in routine.parameters if p.name in args)
    )
    read: ReadPlan | None = None
    if routine.return_kind == "composite":
        table = snapshot.tables.get(routine.return_table) if routine.return_table else None
        node = build_read_plan(snapshot, table, target.query, alias=routine.name)
        read = ReadPlan(node, *page(shape, node))
    # Only a POST may write, and only to a volatile function (PostgREST's rule).
    read_only = shape.method != "POST" or routine.volatility != "v"
    return CallPlan(routine, arg_names, read, read_only)


def check_call(shape: RequestShape, plan: CallPlan) -> None:
    """PostgREST refuses before the call: only a set's rows can be counted against `max-affected`."""
    if shape.prefs.strict_max_affected is not None and not plan.routine.returns_set:
        raise RecordsError(
            400,
            "PGRST128",
            "Function must return SETOF or TABLE when max-affected preference is used with handling=strict",
        )


def choose_routine(schema: str, name: str, overloads: Sequence[Routine], args: Mapping[str, Any]) -> Routine:
    given = set(args)
    fits: list[Routine] = []
    for routine in overloads:
        if routine.single_unnamed_json:
            fits.append(routine)
            continue
        names = {p.name for p in routine.parameters}
        required = {p.name for p in routine.parameters if not p.has_default}
        if required <= given <= names and all(p.name for p in routine.parameters):
            fits.append(routine)
    if len(fits) > 1:
        named = [r for r in fits if not r.single_unnamed_json]
        if len(named) == 1:
            return named[0]
        raise RecordsError(
            300,
            "PGRST203",
            "Could not choose the best candidate function between: "
            + ", ".join(
                f"{r.schema}.{r.name}({', '.join(p.name + ' => ' + p.type for p in r.parameters)})"
                for r in fits
            ),
            None,
            "Try renaming the parameters or the function itself in the database so function overloading "
            "can be resolved",
        )
    if not fits:
        signature = ", ".join(sorted(given))
        raise RecordsError(
            404,
            "PGRST202",
            f"Could not find the function {schema}.{name}({signature}) in the schema cache",
            f"Searched for the function {schema}.{name} with parameters {signature or 'none'}, "
            "but no matches "
            "were found in the schema cache.",
        )
    return fits[0]
