"""Stage two, functions: which routine a call runs and how its result is read (PostgREST's `CallPlan`).

The routine and the plan depend on the request's shape and on which parameters the arguments name, never
on their values: the arguments travel to the statement as one JSON parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kilnbase.db.schema_cache import Routine, SchemaSnapshot
from kilnbase.records import fuzzy, media_type
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
    query = parse_query(
        query_pairs(shape.query_string), rpc_read=shape.method != "POST", aggregates=shape.aggregates
    )
    return CallTarget(overloads, names, query)


#: A POST body's kind, as a call reads it: "json", "form", "csv", or one taken whole by a function's single
#: unnamed parameter of the matching type ("text", "xml", "bytea"). None for GET and HEAD (the query).
BodyKind = str | None
#: The kinds of body that are only ever one unnamed parameter's value, by Content-Type.
RAW_BODY_KINDS = {"text/plain": "text", "text/xml": "xml", "application/octet-stream": "bytea"}
#: (body kind, parameter type) a single unnamed parameter takes the whole body for (PostgREST's list).
_WHOLE_BODY = frozenset(
    {("json", "json"), ("json", "jsonb"), ("text", "text"), ("xml", "xml"), ("bytea", "bytea")}
)
#: The types an unnamed parameter may have for PostgREST to list the function at all.
_UNNAMED_TYPES = frozenset({"bytea", "json", "jsonb", "text", "xml"})


def body_kind(method: str, content_type: str) -> BodyKind:
    if method != "POST":
        return None
    if content_type in RAW_BODY_KINDS:
        return RAW_BODY_KINDS[content_type]
    if content_type == "application/x-www-form-urlencoded":
        return "form"
    if content_type == "text/csv":
        return "csv"
    return "json"


@dataclass(frozen=True, slots=True)
class CallPlan:
    """A call of `routine` with the arguments `arg_names`, or with the whole body as its one unnamed
    parameter (`positional`). A table-typed result is read like a table: `read` is its tree and page."""

    routine: Routine
    arg_names: tuple[str, ...]
    read: ReadPlan | None
    read_only: bool

    @property
    def single_value(self) -> bool:
        return not self.routine.returns_set

    @property
    def positional(self) -> bool:
        """PostgREST's `OnePosParam`: a function whose only parameter has no name gets the body itself."""
        return is_single_unnamed(self.routine)


def is_single_unnamed(routine: Routine) -> bool:
    return len(routine.parameters) == 1 and routine.parameters[0].name == ""


def call_plan(
    shape: RequestShape,
    snapshot: SchemaSnapshot,
    target: CallTarget,
    args: Mapping[str, Any],
    kind: BodyKind = "json",
) -> CallPlan:
    schema = shape.schema

    def functions() -> list[str]:
        return [n for (s, n), found in snapshot.routines.items() if s == schema and any(map(_listed, found))]

    routine = choose_routine(schema, shape.resource, target.overloads, set(args), kind, functions)
    arg_names = (
        () if is_single_unnamed(routine) else tuple(p.name for p in routine.parameters if p.name in args)
    )
    read: ReadPlan | None = None
    if routine.return_kind == "composite":
        table = snapshot.tables.get(routine.return_table) if routine.return_table else None
        node = build_read_plan(snapshot, table, target.query, alias=routine.name)
        read = ReadPlan(node, *page(shape, node), csv=shape.media == media_type.CSV)
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


def choose_routine(
    schema: str,
    name: str,
    overloads: Sequence[Routine],
    given: set[str],
    kind: BodyKind = "json",
    functions: Callable[[], Iterable[str]] = tuple,
) -> Routine:
    """PostgREST's `findProc`: the overload whose parameters the argument names fit; failing that, the one
    whose single unnamed parameter takes this kind of body; more than one is 300 PGRST203, listing them in
    PostgREST's order (fewest parameters first), none 404 PGRST202."""
    listed = sorted(filter(_listed, overloads), key=_overload_order)
    matched: list[Routine] = []
    fallback: list[Routine] = []
    for routine in listed:
        if _fits(routine, given, kind):
            matched.append(routine)
        elif is_single_unnamed(routine) and (kind, routine.parameters[0].type) in _WHOLE_BODY:
            fallback.append(routine)
    found = matched or fallback
    if len(found) == 1:
        return found[0]
    if found:
        raise RecordsError(
            300,
            "PGRST203",
            "Could not choose the best candidate function between: "
            + ", ".join(
                f"{r.schema}.{r.name}({', '.join(p.name + ' => ' + p.type for p in r.parameters)})"
                for r in found
            ),
            None,
            "Try renaming the parameters or the function itself in the database so function overloading "
            "can be resolved",
        )
    hint = _hint(schema, name, listed, sorted(given), kind, functions)
    raise _no_function(schema, name, sorted(given), kind, hint)


def _hint(
    schema: str,
    name: str,
    overloads: list[Routine],
    keys: list[str],
    kind: BodyKind,
    functions: Callable[[], Iterable[str]],
) -> str | None:
    """PostgREST's hint: the closest parameter list of the function's overloads, or when it has none, the
    closest function name of the schema (`functions()`); none for a raw body."""
    if kind in ("text", "xml", "bytea"):
        return None
    if overloads:
        lists = ["(" + ", ".join(sorted(p.name for p in r.parameters)) + ")" for r in overloads]
        found = fuzzy.closest("(" + ", ".join(keys) + ")", lists, fuzzy.PARAMS_SCORE)
        found = None if found is None else name + found
    else:
        found = fuzzy.closest(name, functions(), fuzzy.NAME_SCORE)
    return None if found is None else f"Perhaps you meant to call the function {schema}.{found}"


def _listed(routine: Routine) -> bool:
    """PostgREST leaves out of its schema cache a function it could never call: more than one unnamed
    parameter, or one whose first parameter is not of a type a whole body can be."""
    unnamed = sum(1 for p in routine.parameters if not p.name)
    return unnamed == 0 or (unnamed == 1 and routine.parameters[0].type in _UNNAMED_TYPES)


def _overload_order(routine: Routine) -> tuple[int, list[tuple[str, str, bool]]]:
    """PostgREST's `Ord Routine` among overloads: fewer parameters first, then by the parameters."""
    return len(routine.parameters), [(p.name, p.type, not p.has_default) for p in routine.parameters]


def _fits(routine: Routine, given: set[str], kind: BodyKind) -> bool:
    if not routine.parameters:
        return not given and kind not in ("text", "xml", "bytea")
    required = {p.name for p in routine.parameters if not p.has_default}
    optional = {p.name for p in routine.parameters if p.has_default}
    return given - optional == required


def _no_function(schema: str, name: str, keys: list[str], kind: BodyKind, hint: str | None) -> RecordsError:
    function = f"{schema}.{name}"
    raw = kind in ("text", "xml", "bytea")
    listed = ", ".join(keys)
    if raw:
        message = f"Could not find the function {function} in the schema cache"
        searched = f" with a single unnamed {kind} parameter"
    else:
        message = f"Could not find the function {function}{f'({listed})' if keys else ' without parameters'}"
        message += " in the schema cache"
        searched = (
            (f" with parameter{'s' if len(keys) > 1 else ''} {listed}") if keys else " without parameters"
        )
        if kind == "json":
            searched += " or with a single unnamed json/jsonb parameter"
    return RecordsError(
        404,
        "PGRST202",
        message,
        f"Searched for the function {function}{searched}, but no matches were found in the schema cache.",
        hint,
    )
