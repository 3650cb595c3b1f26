"""Stage two, reads: the parsed query checked against the schema cache and turned into a tree of read nodes.

Every column, table and relationship named in the URL is resolved here (404/400 with PostgREST's codes
when it does not exist), so the SQL stage only ever sees identifiers that the catalog vouched for. A
`ReadPlan` is that tree with its page; `TableTarget` is the table a request names with its parsed query,
which the write plans start from too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kilnbase.db.schema_cache import ForeignKey, Routine, SchemaSnapshot, Table
from kilnbase.records import fuzzy, media_type
from kilnbase.records.api_request import RequestShape, query_pairs
from kilnbase.records.errors import RecordsError
from kilnbase.records.query_grammar import (
    Condition,
    EmbedPath,
    Field,
    Filter,
    LogicTree,
    OrderTerm,
    QueryParams,
    SelectColumn,
    SelectEmbed,
    SelectItem,
    SelectStar,
    parse_query,
)


@dataclass(frozen=True)
class Relationship:
    kind: str  # "m2o", "o2m", "o2o" or "m2m"
    source: Table
    target: Table
    key: ForeignKey  # m2o: source -> target; o2m/o2o: target -> source; m2m: junction -> source
    junction: Table | None = None
    target_key: ForeignKey | None = None  # m2m: junction -> target
    function: Routine | None = None  # computed: the function that gives the target's rows

    @property
    def to_one(self) -> bool:
        return self.kind in ("m2o", "o2o", "computed_one")

    def describe(self) -> dict[str, str]:
        """PGRST201's `details` entry."""
        cardinality = {
            "m2o": "many-to-one",
            "o2m": "one-to-many",
            "o2o": "one-to-one",
            "m2m": "many-to-many",
            "computed_one": "many-to-one",
            "computed_many": "one-to-many",
        }
        key = self.key
        if self.kind == "m2m" and self.junction is not None and self.target_key is not None:
            text = (
                f"{self.junction.qualified} using {key.name}({', '.join(key.columns)}) and "
                f"{self.target_key.name}({', '.join(self.target_key.columns)})"
            )
        else:
            text = (
                f"{key.name} using {key.table}({', '.join(key.columns)}) and "
                f"{key.foreign_table}({', '.join(key.foreign_columns)})"
            )
        return {
            "cardinality": cardinality[self.kind],
            "embedding": f"{self.source.name} with {self.target.name}",
            "relationship": text,
        }


@dataclass
class OutputColumn:
    field: Field
    name: str
    cast: str | None = None
    aggregate: str | None = None  # the node is then grouped by its other columns
    aggregate_cast: str | None = None


@dataclass
class ReadNode:
    """One table (or function result) read: its outputs, embeds, conditions, order and page."""

    table: Table | None  # None: a function whose row type is not a table (RETURNS TABLE/record)
    alias: str
    star: bool = False
    columns: list[OutputColumn] = field(default_factory=list)
    embeds: list[Embed] = field(default_factory=list)
    conditions: list[Condition] = field(default_factory=list)
    exists: list[tuple[Embed, bool]] = field(default_factory=list)  # (embed, must exist)
    order: list[OrderTerm] = field(default_factory=list)
    limit: int | None = None
    offset: int = 0
    #: The computed columns the node reads, filters or orders by: name -> the function, schema-qualified
    #: and quoted (a function taking the table's row: `"public"."full_name"("people")`).
    computed: dict[str, str] = field(default_factory=dict)

    @property
    def output_names(self) -> list[str]:
        names: list[str] = []
        if self.star and self.table is not None:
            names.extend(self.table.columns)
        names.extend(column.name for column in self.columns)
        for embed in self.embeds:
            if embed.spread:
                names.extend(embed.node.output_names)
            elif embed.has_output:
                names.append(embed.output_name)
        return names


@dataclass
class Embed:
    node: ReadNode
    relationship: Relationship
    output_name: str
    name: str
    inner: bool
    spread: bool
    has_output: bool
    lateral: str


class _Aliases:
    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, base: str) -> str:
        candidate, counter = base, 1
        while candidate in self.used:
            counter += 1
            candidate = f"{base}_{counter}"
        self.used.add(candidate)
        return candidate


#: PostgREST's `maxDbTablesForFuzzySearch`.
MAX_TABLES_FOR_HINTS = 500


def find_table(snapshot: SchemaSnapshot, schema: str, name: str) -> Table:
    table = snapshot.tables.get((schema, name))
    if table is not None:
        return table
    names = [t for (s, t) in snapshot.tables if s == schema]
    # PostgREST searches only schemas of fewer than 500 tables and views.
    close = fuzzy.closest(name, names, fuzzy.NAME_SCORE) if len(names) < MAX_TABLES_FOR_HINTS else None
    hint = f"Perhaps you meant the table '{schema}.{close}'" if close else None
    raise RecordsError(
        404, "PGRST205", f"Could not find the table '{schema}.{name}' in the schema cache", None, hint
    )


@dataclass(frozen=True, slots=True)
class TableTarget:
    """The table (or view) a request names, and its query string parsed."""

    table: Table
    query: QueryParams


def table_target(shape: RequestShape, snapshot: SchemaSnapshot) -> TableTarget:
    """404 PGRST205 for a table the schema cache does not have, then the query string's parse errors."""
    table = find_table(snapshot, shape.schema, shape.resource)
    return TableTarget(table, parse_query(query_pairs(shape.query_string), aggregates=shape.aggregates))


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """A read: the tree of nodes and the page (from `limit`/`offset` and the Range header)."""

    node: ReadNode
    offset: int
    limit: int | None
    csv: bool = False  # the body is written as CSV (by Postgres, as PostgREST has it written)


def read_plan(shape: RequestShape, snapshot: SchemaSnapshot, target: TableTarget) -> ReadPlan:
    node = build_read_plan(snapshot, target.table, target.query)
    return ReadPlan(node, *page(shape, node), csv=shape.media == media_type.CSV)


def page(shape: RequestShape, node: ReadNode) -> tuple[int, int | None]:
    """Offset and limit from `limit`/`offset` and the `Range` header (their intersection), at most the
    server's `max_rows` (PostgREST's `db-max-rows`: a smaller page, never an error)."""
    if shape.range_error is not None:
        raise shape.range_error
    offset, limit = node.offset, node.limit
    if shape.range is not None:
        first, last = shape.range
        upper_query = None if limit is None else offset + limit - 1
        lower = max(first, offset)
        upper = last if upper_query is None else (upper_query if last is None else min(last, upper_query))
        offset = lower
        limit = None if upper is None else max(upper - lower + 1, 0)
    if shape.max_rows is not None and (limit is None or limit > shape.max_rows):
        limit = shape.max_rows
    return offset, limit


def check_column(table: Table | None, name: str) -> None:
    if table is not None and name not in table.columns:
        raise RecordsError(400, "42703", f"column {table.name}.{name} does not exist")


def _check_field(snapshot: SchemaSnapshot, node: ReadNode, name: str) -> None:
    """A column of the node's table, or a computed column (a function taking the table's row and
    returning one value), which the node then reads through its function."""
    table = node.table
    if table is None or name in table.columns:
        return
    routine = computed_column(snapshot, table, name)
    if routine is None:
        check_column(table, name)
        return
    node.computed[name] = f"{_quoted(routine.schema)}.{_quoted(routine.name)}"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _takes_row_of(routine: Routine, table: Table) -> bool:
    """A function whose first parameter is the table's row, and whose others have defaults."""
    parameters = routine.parameters
    return (
        bool(parameters)
        and parameters[0].relation == (table.schema, table.name)
        and all(p.has_default for p in parameters[1:])
    )


def computed_column(snapshot: SchemaSnapshot, table: Table, name: str) -> Routine | None:
    """PostgREST's computed field: `name(table_row) RETURNS scalar`, in the table's schema."""
    for routine in snapshot.routines.get((table.schema, name), ()):
        if _takes_row_of(routine, table) and routine.return_kind == "scalar" and not routine.returns_set:
            return routine
    return None


def computed_relationships(snapshot: SchemaSnapshot, source: Table, name: str) -> list[Relationship]:
    """PostgREST's computed relationships: `name(source_row) RETURNS [SETOF] other_table`, in the source's
    schema, embedded like a foreign key (to-one when it returns one row: not a set, or `ROWS 1`)."""
    found: list[Relationship] = []
    for routine in snapshot.routines.get((source.schema, name), ()):
        target = snapshot.tables.get(routine.return_table) if routine.return_table else None
        parameters = routine.parameters
        if (
            target is None
            or routine.return_kind != "composite"
            or len(parameters) != 1
            or parameters[0].relation != (source.schema, source.name)
        ):
            continue
        key = ForeignKey(name, source.schema, source.name, (), target.schema, target.name, ())
        kind = "computed_one" if routine.single_row else "computed_many"
        found.append(Relationship(kind, source, target, key, function=routine))
    return found


def build_read_plan(
    snapshot: SchemaSnapshot,
    table: Table | None,
    query: QueryParams,
    *,
    alias: str | None = None,
    known_columns: list[str] | None = None,
) -> ReadNode:
    """The root node for `table` (or for a function result with `known_columns`) and its embeds."""
    aliases = _Aliases()
    root_alias = aliases.take(alias or (table.name if table else "pgrst_source"))
    node = ReadNode(table=table, alias=root_alias)
    _fill(snapshot, node, query.select, (), query, aliases, known_columns)
    _check_paths(node, query)
    return node


def _fill(
    snapshot: SchemaSnapshot,
    node: ReadNode,
    items: tuple[SelectItem, ...],
    path: EmbedPath,
    query: QueryParams,
    aliases: _Aliases,
    known_columns: list[str] | None = None,
) -> None:
    for item in items:
        if isinstance(item, SelectStar):
            node.star = True
            if node.table is None and known_columns is not None:
                node.columns.extend(OutputColumn(Field(name), name) for name in known_columns)
                node.star = False
        elif isinstance(item, SelectColumn) and item.aggregate is not None:
            if item.field.name != "*":
                _check_field(snapshot, node, item.field.name)
            node.columns.append(
                OutputColumn(
                    item.field, item.alias or item.aggregate, item.cast, item.aggregate, item.aggregate_cast
                )
            )
        elif isinstance(item, SelectColumn) and _is_legacy_count(node, item):
            # `select=count` where the table has no such column: Postgres reads `t.count` as `count(t)`,
            # which PostgREST passes through (its backwards-compatible count; also inside an embed).
            node.columns.append(OutputColumn(Field("*"), item.alias or "count", None, "count", item.cast))
        elif isinstance(item, SelectColumn):
            _check_field(snapshot, node, item.field.name)
            node.columns.append(OutputColumn(item.field, item.alias or item.field.default_alias, item.cast))
        else:
            _check_unique_embed(node, item, path)
            node.embeds.append(_embed(snapshot, node, item, path, query, aliases))
    for condition in query.conditions.get(path, []):
        if isinstance(condition, Filter) and not condition.field.json_path:
            embed = _embed_named(node, condition.field.name)
            if embed is not None:
                operation = condition.operation
                if operation.operator != "is" or operation.value not in ("null", "not_null"):
                    raise RecordsError(
                        400,
                        "PGRST120",
                        "Only is null or not is null filters are allowed on embedded resources",
                    )
                must_exist = (operation.value == "not_null") != operation.negated
                node.exists.append((embed, must_exist))
                continue
        _check_condition(snapshot, node, condition)
        node.conditions.append(condition)
    for term in query.order.get(path, []):
        if term.relation is not None:
            embed = _embed_named(node, term.relation)
            if embed is None:
                raise RecordsError(
                    400, "PGRST108", f"'{term.relation}' is not an embedded resource in this request"
                )
            if not embed.relationship.to_one:
                raise RecordsError(
                    400,
                    "PGRST118",
                    f"A related order on '{term.relation}' is not possible",
                    f"'{node.table.name if node.table else node.alias}' and '{term.relation}' do not form "
                    "a many-to-one or one-to-one relationship",
                )
            check_column(embed.relationship.target, term.field.name)
        else:
            _check_field(snapshot, node, term.field.name)
        node.order.append(term)
    node.limit = query.limit.get(path)
    node.offset = query.offset.get(path, 0)


def _is_legacy_count(node: ReadNode, item: SelectColumn) -> bool:
    field = item.field
    return (
        field.name == "count"
        and not field.json_path
        and node.table is not None
        and "count" not in node.table.columns
        and "count" not in node.computed
    )


def _check_unique_embed(node: ReadNode, item: SelectEmbed, path: EmbedPath) -> None:
    """Two embeds of one resource under one name (spread or not) are refused as PostgREST's statement
    refuses them, naming the alias it would have given both (never a JSON object with a key twice)."""
    name = item.alias or item.name
    if any(embed.output_name == name for embed in node.embeds):
        parent = node.table.name if node.table is not None else node.alias
        raise RecordsError(
            400, "42712", f'table name "{parent}_{name}_{len(path) + 1}" specified more than once'
        )


def _check_condition(snapshot: SchemaSnapshot, node: ReadNode, condition: Condition) -> None:
    if isinstance(condition, Filter):
        _check_field(snapshot, node, condition.field.name)
    else:
        for child in condition.children:
            _check_condition(snapshot, node, child)


def _embed_named(node: ReadNode, name: str) -> Embed | None:
    for embed in node.embeds:
        if embed.output_name == name or embed.name == name:
            return embed
    return None


def _check_paths(root: ReadNode, query: QueryParams) -> None:
    """A filter, order or page for an embed that is not in `select` is PGRST108."""
    paths = set(query.conditions) | set(query.order) | set(query.limit) | set(query.offset)
    for path in paths:
        node = root
        for step in path:
            embed = _embed_named(node, step)
            if embed is None:
                raise RecordsError(
                    400,
                    "PGRST108",
                    f"'{step}' is not an embedded resource in this request",
                    None,
                    f"Verify that '{step}' is included in the 'select' query parameter.",
                )
            node = embed.node


def _embed(
    snapshot: SchemaSnapshot,
    parent: ReadNode,
    item: SelectEmbed,
    path: EmbedPath,
    query: QueryParams,
    aliases: _Aliases,
) -> Embed:
    if parent.table is None:
        raise RecordsError(
            400, "PGRST200", f"Could not find a relationship for '{item.name}' in the schema cache"
        )
    relationship = resolve_relationship(snapshot, parent.table, item.name, item.hint)
    child = ReadNode(table=relationship.target, alias=aliases.take(relationship.target.name))
    output = item.alias or item.name
    _fill(snapshot, child, item.items, (*path, output), query, aliases)
    if (*path, item.name) != (*path, output) and (*path, item.name) in query.conditions:
        # Filters may name the embed by its table name too.
        for condition in query.conditions[(*path, item.name)]:
            _check_condition(snapshot, child, condition)
            child.conditions.append(condition)
    if item.spread and relationship.to_one is False and child.star:
        child.star = False
        child.columns = [OutputColumn(Field(name), name) for name in relationship.target.columns]
    return Embed(
        node=child,
        relationship=relationship,
        output_name=output,
        name=item.name,
        inner=item.join == "inner",
        spread=item.spread,
        has_output=bool(item.items),
        lateral=aliases.take(f"{output}_lateral"),
    )


def resolve_relationship(
    snapshot: SchemaSnapshot, source: Table, name: str, hint: str | None
) -> Relationship:
    """PostgREST's `findRel`: every relationship of `source` within its schema, kept when `name` (and the
    hint) select it. A constraint or column name selects only relationships to tables, never to views
    over them (views inherit their tables' keys); a table's relationship to itself is one-to-many by the
    table's name and many-to-one by the column's."""
    # A function of the source's row named `name` embeds as PostgREST's computed relationship, and
    # prevails over a detected relationship of that name.
    candidates = computed_relationships(snapshot, source, name) or [
        r for r in relationships(snapshot, source) if _selects(r, name, hint)
    ]
    if not candidates:
        detail = (
            f"Searched for a foreign key relationship between '{source.name}' and '{name}'"
            + (f" using the hint '{hint}'" if hint else "")
            + f" in the schema '{source.schema}', but no matches were found."
        )
        raise RecordsError(
            400,
            "PGRST200",
            f"Could not find a relationship between '{source.name}' and '{name}' in the schema cache",
            detail,
        )
    if len(candidates) > 1:
        options = [f"'{name}!{_hint_for(c)}'" for c in candidates]
        raise RecordsError(
            300,
            "PGRST201",
            f"Could not embed because more than one relationship was found for '{source.name}' and '{name}'",
            [c.describe() for c in candidates],
            f"Try changing '{name}' to one of the following: {', '.join(options)}. "
            "Find the desired relationship in the 'details' key.",
        )
    return candidates[0]


def relationships(snapshot: SchemaSnapshot, source: Table) -> list[Relationship]:
    """Every relationship from `source` to a table or view of its own schema: its foreign keys
    (many-to-one), the foreign keys to it (one-to-many, or one-to-one on unique columns), and the
    junctions between it and another table (many-to-many)."""
    found: list[Relationship] = []
    schema = source.schema
    for key in source.outgoing:
        target = snapshot.tables.get((key.foreign_schema, key.foreign_table))
        if target is not None and target.schema == schema:
            found.append(Relationship("m2o", source, target, key))
    for key in source.incoming:
        target = snapshot.tables.get((key.schema, key.table))
        if target is not None and target.schema == schema:
            found.append(Relationship("o2o" if target.is_unique(key.columns) else "o2m", source, target, key))
    for (junction_schema, _), junction in snapshot.tables.items():
        if junction_schema != schema or junction is source:
            continue
        for key in junction.outgoing:
            if (key.foreign_schema, key.foreign_table) != (schema, junction.name):
                target = snapshot.tables.get((key.foreign_schema, key.foreign_table))
                if target is not None and target.schema == schema and target is not junction:
                    found.extend(r for r in _through(junction, source, target) if r.target_key is key)
    return found


def _selects(relationship: Relationship, name: str, hint: str | None) -> bool:
    target = relationship.target
    if relationship.kind == "m2m":
        junction = relationship.junction
        return target.name == name and (hint is None or (junction is not None and junction.name == hint))
    key = relationship.key
    outgoing = relationship.kind == "m2o"
    # (the columns on the source's side, the columns on the target's side)
    own, other = (key.columns, key.foreign_columns) if outgoing else (key.foreign_columns, key.columns)
    to_view = target.kind in ("v", "m")
    if relationship.source is target:  # a table related to itself
        if hint is None:
            return (target.name == name and not outgoing) or (outgoing and own == (name,))
        return target.name == name and not outgoing and other == (hint,)
    if hint is None:
        return target.name == name or (key.name == name and not to_view) or (own == (name,) and not to_view)
    return target.name == name and (key.name == hint or own == (hint,) or other == (hint,))


def _through(junction: Table, source: Table, target: Table) -> list[Relationship]:
    found: list[Relationship] = []
    if junction in (source, target):
        return found
    for to_source in junction.outgoing:
        if (to_source.foreign_schema, to_source.foreign_table) != (source.schema, source.name):
            continue
        for to_target in junction.outgoing:
            if to_target is to_source:
                continue
            if (to_target.foreign_schema, to_target.foreign_table) != (target.schema, target.name):
                continue
            if junction.is_unique(tuple(dict.fromkeys(to_source.columns + to_target.columns))):
                found.append(Relationship("m2m", source, target, to_source, junction, to_target))
    return found


def _hint_for(candidate: Relationship) -> str:
    if candidate.kind == "m2m" and candidate.junction is not None:
        return candidate.junction.name
    return candidate.key.name


def collect_fields(conditions: list[Condition]) -> list[Field]:
    fields: list[Field] = []
    for condition in conditions:
        if isinstance(condition, Filter):
            fields.append(condition.field)
        elif isinstance(condition, LogicTree):
            fields.extend(collect_fields(list(condition.children)))
    return fields
