"""Stage two, writes: what an insert, upsert, update or delete does, as plain data (PostgREST's `MutatePlan`).

A plan depends on the request's shape and on the columns the body sets, never on the body's values, so
it is made once per shape and columns; the body travels to the statement as one JSON parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from kilnbase.db.schema_cache import SchemaSnapshot, Table
from kilnbase.records import media_type
from kilnbase.records.api_request import RequestShape
from kilnbase.records.errors import RecordsError
from kilnbase.records.query_grammar import Condition, Filter, QueryParams
from kilnbase.records.read_plan import ReadNode, TableTarget, build_read_plan


@dataclass(frozen=True, slots=True)
class MutatePlan:
    kind: Literal["insert", "update", "delete"]
    table: Table
    columns: tuple[str, ...]  # what the body sets (insert, update)
    conditions: tuple[Condition, ...]  # the root filters (update, delete)
    on_conflict: tuple[str, ...] | None  # the conflict target of an upsert
    resolution: str | None  # "merge-duplicates" or "ignore-duplicates": an upsert
    missing_default: bool  # a column a row lacks takes its default (`Prefer: missing=default`)
    representation: bool  # the answer carries the rows written
    returning: ReadNode | None  # how to read them back (None: no statement runs, see `is_noop`)
    single_upsert: bool  # a PUT: 201 when it inserted, 200 when it replaced (204 without the row)
    counts_inserted: bool  # an upsert that merges: the statement counts the rows it inserted (the status)
    check_first: bool  # the answer can still fail after the statement, and must roll it back
    location: bool  # an insert answers with the Location of its first row (`return=headers-only`)
    csv: bool = False  # the rows read back are written as CSV
    computed: Mapping[str, str] = field(default_factory=dict)  # computed columns the filters name

    @property
    def is_noop(self) -> bool:
        """An update that sets no column: answered without running anything, as PostgREST does."""
        return self.kind == "update" and not self.columns


def insert_plan(
    shape: RequestShape,
    snapshot: SchemaSnapshot,
    target: TableTarget,
    columns: tuple[str, ...],
    *,
    upsert: bool = False,
) -> MutatePlan:
    """POST (or, with `upsert`, PUT: an upsert on the primary key).

    As PostgREST: `resolution=` needs a conflict target (`on_conflict=`, else the primary key); with none
    it is ignored, and the POST is a plain insert. A merge sets every column the body names, the conflict
    columns too, so a body of only those still upserts and returns its row."""
    table, query, prefs = target.table, target.query, shape.prefs
    resolution = "merge-duplicates" if upsert else prefs.resolution
    conflict: tuple[str, ...] | None = None
    if resolution is not None:
        conflict = (table.primary_key if upsert else None) or query.on_conflict or table.primary_key
        for name in conflict:
            if name not in table.columns:
                raise RecordsError(400, "42703", f"column {table.name}.{name} does not exist")
        if not conflict:
            resolution, conflict = None, None
    representation = _wants_rows(shape)
    return MutatePlan(
        kind="insert",
        table=table,
        columns=columns,
        conditions=(),
        on_conflict=conflict,
        resolution=resolution,
        missing_default=prefs.missing == "default",
        representation=representation,
        returning=_returning(snapshot, table, query) if representation else None,
        single_upsert=upsert,
        counts_inserted=resolution == "merge-duplicates",
        check_first=_check_first(shape, representation),
        location=prefs.return_ == "headers-only" and representation,
        csv=shape.media == media_type.CSV,
    )


def update_plan(
    shape: RequestShape, snapshot: SchemaSnapshot, target: TableTarget, columns: tuple[str, ...]
) -> MutatePlan:
    conditions, computed = root_conditions(target.table, target.query, snapshot)
    representation = _wants_rows(shape)
    returning = _returning(snapshot, target.table, target.query) if representation and columns else None
    return _filtered("update", shape, target.table, columns, conditions, representation, returning, computed)


def delete_plan(shape: RequestShape, snapshot: SchemaSnapshot, target: TableTarget) -> MutatePlan:
    conditions, computed = root_conditions(target.table, target.query, snapshot)
    representation = _wants_rows(shape)
    returning = _returning(snapshot, target.table, target.query) if representation else None
    return _filtered("delete", shape, target.table, (), conditions, representation, returning, computed)


def _filtered(
    kind: Literal["update", "delete"],
    shape: RequestShape,
    table: Table,
    columns: tuple[str, ...],
    conditions: list[Condition],
    representation: bool,
    returning: ReadNode | None,
    computed: dict[str, str],
) -> MutatePlan:
    return MutatePlan(
        kind=kind,
        table=table,
        columns=columns,
        conditions=tuple(conditions),
        on_conflict=None,
        resolution=None,
        missing_default=kind == "update" and shape.prefs.missing == "default",
        representation=representation,
        returning=returning,
        single_upsert=False,
        counts_inserted=False,
        check_first=_check_first(shape, representation),
        location=False,
        csv=shape.media == media_type.CSV,
        computed=computed,
    )


def upsert_key(target: TableTarget) -> dict[str, str]:
    """PUT's filters: every primary key column and nothing else, each with `eq` (PGRST114, PGRST105).
    Returns the values they name, which the body must repeat (`check_upsert_row`)."""
    table, query = target.table, target.query
    if () in query.limit or () in query.offset:
        raise RecordsError(400, "PGRST114", "limit/offset querystring parameters are not allowed for PUT")
    filters = query.conditions.get((), [])
    pk = table.primary_key
    eq_values: dict[str, str] = {}
    for condition in filters:
        if (
            isinstance(condition, Filter)
            and not condition.field.json_path
            and condition.operation.operator == "eq"
            and not condition.operation.negated
        ):
            eq_values[condition.field.name] = str(condition.operation.value)
        else:
            eq_values = {}
            break
    if not pk or set(eq_values) != set(pk) or len(filters) != len(pk):
        raise RecordsError(
            405, "PGRST105", "Filters must include all and only primary key columns with 'eq' operators"
        )
    return eq_values


def check_upsert_row(row: Mapping[str, Any], key: Mapping[str, str]) -> None:
    """The body of a PUT names the row its URL names (PGRST115)."""
    for name, value in key.items():
        if name not in row or plain_text(row[name]) != value:
            raise RecordsError(400, "PGRST115", "Payload values do not match URL in primary key column(s)")


def plain_text(value: Any) -> str:
    """A JSON value as it reads in a URL (`true`, `null`, `42`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def root_conditions(
    table: Table, query: QueryParams, snapshot: SchemaSnapshot | None = None
) -> tuple[list[Condition], dict[str, str]]:
    """The root filters of a write, checked against the table's columns and computed columns (the
    functions of `snapshot`; no embeds on writes, so no table of it: nothing here may resolve a
    relationship), and the computed columns they name."""
    functions_only = SchemaSnapshot(routines=snapshot.routines) if snapshot is not None else SchemaSnapshot()
    node = build_read_plan(
        functions_only, table, replace(query, select=(), conditions={(): query.conditions.get((), [])})
    )
    if node.exists:
        raise RecordsError(400, "PGRST100", "Filters on embedded resources are not allowed on writes")
    return node.conditions, node.computed


def _returning(snapshot: SchemaSnapshot, table: Table, query: QueryParams) -> ReadNode:
    """The rows written, read back as `select=` asks, with the embeds' filters, order and pages (the root's
    filters chose the rows to write; its order and page do not apply to a write)."""
    read_query = replace(
        query,
        conditions={k: v for k, v in query.conditions.items() if k != ()},
        order={k: v for k, v in query.order.items() if k != ()},
        limit={k: v for k, v in query.limit.items() if k != ()},
        offset={k: v for k, v in query.offset.items() if k != ()},
    )
    return build_read_plan(snapshot, table, read_query)


def _wants_rows(shape: RequestShape) -> bool:
    return_ = shape.prefs.return_
    return return_ in ("representation", "headers-only") or (
        shape.media in media_type.SINGULAR and return_ != "minimal"
    )


def _check_first(shape: RequestShape, representation: bool) -> bool:
    """A strict max-affected, or a single object that may not be one."""
    return shape.prefs.strict_max_affected is not None or (
        representation and shape.media in media_type.SINGULAR
    )
