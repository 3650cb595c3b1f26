"""Stage three: a plan rendered as one SQL statement with bound parameters. The only stage that knows SQL.

Identifiers come from the schema cache (or are user aliases) and are always quoted; every value from the
URL or the body is a bound parameter, sent with the `unknown` type so Postgres casts it to the column's
type exactly as it would cast a literal. Postgres builds the JSON (`json_agg`, `row_to_json`), and the
body travels back as one text value that the response passes through untouched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kilnbase.db.schema_cache import Routine, Table
from kilnbase.records.query_grammar import (
    FTS_OPERATORS,
    IS_VALUES,
    SIMPLE_OPERATORS,
    Condition,
    Field,
    Filter,
    OrderTerm,
)
from kilnbase.records.read_plan import Embed, OutputColumn, ReadNode


@dataclass
class Sql:
    """SQL text with its parameters, in order; `%` in text is escaped by `ident`, values are never in text."""

    parts: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def add(self, text: str, *params: Any) -> Sql:
        self.parts.append(text)
        self.params.extend(params)
        return self

    def extend(self, other: Sql) -> Sql:
        self.parts.extend(other.parts)
        self.params.extend(other.params)
        return self

    @property
    def text(self) -> str:
        return "".join(self.parts)


#: A JSON path step that indexes an array: ASCII digits only (`int` refuses `²`, which `isdigit` accepts).
_ARRAY_INDEX = re.compile(r"-?[0-9]{1,9}")


def ident(name: str) -> str:
    return '"' + name.replace('"', '""').replace("%", "%%") + '"'


def qualified(table: Table) -> str:
    return f"{ident(table.schema)}.{ident(table.name)}"


def array_literal(values: Sequence[str]) -> str:
    """A Postgres array literal whose every element is quoted (so `,`, `{` or `NULL` stay plain text)."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def field_expr(alias: str, item: Field, computed: Mapping[str, str] | None = None) -> Sql:
    """A column of `alias`, or a computed column: its function (quoted by the plan) called with the row."""
    function = computed.get(item.name) if computed else None
    base = (
        f"{function.replace('%', '%%')}({ident(alias)})" if function else f"{ident(alias)}.{ident(item.name)}"
    )
    sql = Sql().add(base)
    for step in item.json_path:
        key = step.key
        if _ARRAY_INDEX.fullmatch(key):
            sql.add(f" {step.arrow} ({int(key)})")
        else:
            sql.add(f" {step.arrow} %s::text", key)
    return sql


def render_condition(
    alias: str, table: Table | None, condition: Condition, computed: Mapping[str, str] | None = None
) -> Sql:
    if not isinstance(condition, Filter):
        joiner = " AND " if condition.conjunction == "and" else " OR "
        sql = Sql().add("NOT (" if condition.negated else "(")
        for index, child in enumerate(condition.children):
            if index:
                sql.add(joiner)
            sql.extend(render_condition(alias, table, child, computed))
        return sql.add(")")
    operation = condition.operation
    expr = field_expr(alias, condition.field, computed)
    sql = Sql().add("NOT (" if operation.negated else "(")
    operator = operation.operator
    if operator == "is":
        sql.extend(expr).add(f" IS {IS_VALUES[str(operation.value)]}")
    elif operator == "in":
        sql.extend(expr).add(" = ANY(%s)", array_literal(list(operation.value)))
    elif operation.quantifier is not None:
        values = list(operation.value)
        if operator in ("like", "ilike"):
            values = [v.replace("*", "%") for v in values]
        quantifier = "ANY" if operation.quantifier == "any" else "ALL"
        sql.extend(expr).add(f" {SIMPLE_OPERATORS[operator]} {quantifier}(%s)", array_literal(values))
    elif operator in FTS_OPERATORS:
        column = table.columns.get(condition.field.name) if table else None
        is_vector = column is not None and column.type == "tsvector" and not condition.field.json_path
        language = operation.language
        if is_vector:
            sql.extend(expr)
        elif language:
            sql.add("to_tsvector(%s::regconfig, ", language).extend(expr).add(")")
        else:
            sql.add("to_tsvector(").extend(expr).add(")")
        function = FTS_OPERATORS[operator]
        if language:
            sql.add(f" @@ {function}(%s::regconfig, %s)", language, operation.value)
        else:
            sql.add(f" @@ {function}(%s)", operation.value)
    else:
        value = str(operation.value)
        if operator in ("like", "ilike"):
            value = value.replace("*", "%")
        sql.extend(expr).add(f" {SIMPLE_OPERATORS[operator]} %s", value)
    return sql.add(")")


# ---------------------------------------------------------------------------------------------------------
# reads


JSON_COLUMN = "pgrst_json"
EXISTS_COLUMN = "pgrst_exists"
COUNT_COLUMN = "pgrst_count"


@dataclass
class Source:
    """What a node reads from: FROM text (with the node's alias) and the join condition to its parent."""

    from_sql: Sql
    join_condition: Sql | None = None


def table_source(table: Table, alias: str) -> Source:
    return Source(Sql().add(f"{qualified(table)} AS {ident(alias)}"))


def cte_source(cte: str, alias: str) -> Source:
    return Source(Sql().add(f"{ident(cte)} AS {ident(alias)}"))


def _embed_source(embed: Embed, parent_alias: str) -> Source:
    relation = embed.relationship
    child = embed.node.alias
    key = relation.key
    if relation.function is not None:  # computed: the function of the parent's row gives the rows
        function = relation.function
        call = f"{ident(function.schema)}.{ident(function.name)}({ident(parent_alias)})"
        return Source(Sql().add(f"{call} AS {ident(child)}"))
    from_sql = Sql().add(f"{qualified(relation.target)} AS {ident(child)}")
    pairs: list[tuple[str, str, str, str]]  # (left alias, left column, right alias, right column)
    if relation.kind == "m2o":
        pairs = [(child, fc, parent_alias, c) for c, fc in zip(key.columns, key.foreign_columns, strict=True)]
    elif relation.kind in ("o2m", "o2o"):
        pairs = [(child, c, parent_alias, fc) for c, fc in zip(key.columns, key.foreign_columns, strict=True)]
    else:
        assert relation.junction is not None
        assert relation.target_key is not None
        junction = f"{child}_junction"
        from_sql.add(f" JOIN {qualified(relation.junction)} AS {ident(junction)} ON ")
        target_key = relation.target_key
        on = [
            f"{ident(junction)}.{ident(c)} = {ident(child)}.{ident(fc)}"
            for c, fc in zip(target_key.columns, target_key.foreign_columns, strict=True)
        ]
        from_sql.add(" AND ".join(on))
        pairs = [
            (junction, c, parent_alias, fc) for c, fc in zip(key.columns, key.foreign_columns, strict=True)
        ]
    condition = Sql().add(
        " AND ".join(f"{ident(a)}.{ident(b)} = {ident(c)}.{ident(d)}" for a, b, c, d in pairs)
    )
    return Source(from_sql, condition)


def _exists_expr(embed: Embed) -> str:
    lateral = ident(embed.lateral)
    if not embed.spread:
        return f"{lateral}.{JSON_COLUMN} IS NOT NULL"
    if embed.relationship.to_one:
        return f"{lateral}.{EXISTS_COLUMN} IS NOT NULL"
    return f"{lateral}.{COUNT_COLUMN} > 0"


def _lateral(embed: Embed, parent_alias: str) -> Sql:
    child = render_node(embed.node, _embed_source(embed, parent_alias), marker=embed.spread)
    sql = Sql().add(" LEFT JOIN LATERAL (")
    if not embed.spread:
        aggregate = "row_to_json" if embed.relationship.to_one else "json_agg"
        sql.add(f'SELECT {aggregate}("pgrst_row") AS {JSON_COLUMN} FROM (').extend(child).add(
            ') AS "pgrst_row"'
        )
    elif embed.relationship.to_one:
        sql.extend(child)
    else:
        columns = ", ".join(
            f'json_agg("pgrst_row".{ident(n)}) AS {ident(n)}' for n in embed.node.output_names
        )
        sql.add("SELECT ")
        if columns:
            sql.add(columns + ", ")
        sql.add(f"count(*) AS {COUNT_COLUMN} FROM (").extend(child).add(') AS "pgrst_row"')
    return sql.add(f") AS {ident(embed.lateral)} ON TRUE")


def _embed_outputs(embed: Embed, *, grouped: bool = False) -> list[tuple[str, str]]:
    """(expression, output name) per column an embed adds to its parent's row. In a `grouped` parent (one
    with aggregates) the JSON is jsonb, which, unlike json, can be grouped by."""
    lateral = ident(embed.lateral)
    cast = "::jsonb" if grouped else ""
    if not embed.spread:
        if not embed.has_output:
            return []
        if embed.relationship.to_one:
            return [(f"{lateral}.{JSON_COLUMN}{cast}", embed.output_name)]
        return [(f"COALESCE({lateral}.{JSON_COLUMN}, '[]'){cast}", embed.output_name)]
    names = embed.node.output_names
    if embed.relationship.to_one:
        return [(f"{lateral}.{ident(n)}", n) for n in names]
    return [(f"COALESCE({lateral}.{ident(n)}, '[]'){cast}", n) for n in names]


def _order_expr(node: ReadNode, term: OrderTerm) -> Sql:
    if term.relation is None:
        sql = field_expr(node.alias, term.field, node.computed)
    else:
        embed = next(e for e in node.embeds if term.relation in (e.output_name, e.name))
        lateral = ident(embed.lateral)
        if embed.spread:
            sql = Sql().add(f"{lateral}.{ident(term.field.name)}")
        else:
            sql = Sql().add(f"({lateral}.{JSON_COLUMN}::jsonb -> %s::text)", term.field.name)
    if term.descending:
        sql.add(" DESC")
    if term.nulls:
        sql.add(f" NULLS {term.nulls.upper()}")
    return sql


def _column_expr(node: ReadNode, column: OutputColumn) -> Sql:
    """A selected column with its cast, or an aggregate of one (`count(*)` for `count()`) with its casts."""
    if column.aggregate is not None and column.field.name == "*":
        expr = Sql().add("count(*)")
    else:
        expr = field_expr(node.alias, column.field, node.computed)
        if column.cast:
            expr = Sql().add("(").extend(expr).add(f")::{column.cast}")
        if column.aggregate is not None:
            expr = Sql().add(f"{column.aggregate}(").extend(expr).add(")")
    if column.aggregate_cast:
        expr = Sql().add("(").extend(expr).add(f")::{column.aggregate_cast}")
    return expr


def render_node(
    node: ReadNode,
    source: Source,
    *,
    marker: bool = False,
    paged: bool = True,
    count_only: bool = False,
    limit: int | None = None,
    offset: int | None = None,
) -> Sql:
    """`SELECT outputs FROM source laterals WHERE ... ORDER BY ... LIMIT ... OFFSET ...` for one node."""
    outputs: list[Sql] = []
    aggregated = any(column.aggregate is not None for column in node.columns)
    if not count_only:
        if node.star:
            outputs.append(Sql().add(f"{ident(node.alias)}.*"))
        for column in node.columns:
            outputs.append(_column_expr(node, column).add(f" AS {ident(column.name)}"))
        for embed in node.embeds:
            outputs.extend(
                Sql().add(f"{expr} AS {ident(name)}")
                for expr, name in _embed_outputs(embed, grouped=aggregated)
            )
    if marker:
        outputs.append(Sql().add(f"TRUE AS {EXISTS_COLUMN}"))
    sql = Sql().add("SELECT ")
    if count_only and not outputs:
        sql.add("1")
    for index, output in enumerate(outputs):
        if index:
            sql.add(", ")
        sql.extend(output)
    sql.add(" FROM ").extend(source.from_sql)
    needed = {id(embed) for embed, _ in node.exists} | {id(e) for e in node.embeds if e.inner}
    for embed in node.embeds:
        if not count_only or id(embed) in needed:
            sql.extend(_lateral(embed, node.alias))
    where: list[Sql] = []
    if source.join_condition is not None:
        where.append(source.join_condition)
    where.extend(render_condition(node.alias, node.table, c, node.computed) for c in node.conditions)
    where.extend(Sql().add(_exists_expr(e)) for e in node.embeds if e.inner)
    for embed, must_exist in node.exists:
        text = _exists_expr(embed)
        where.append(Sql().add(text if must_exist else f"NOT ({text})"))
    if where:
        sql.add(" WHERE ")
        for index, part in enumerate(where):
            if index:
                sql.add(" AND ")
            sql.extend(part)
    if count_only:
        return sql
    if aggregated:
        # PostgREST's aggregates: grouped by every selected column that is not aggregated, embeds too.
        keys = [
            Sql().add(f"{ident(node.alias)}.{ident(name)}")
            for name in (node.table.columns if node.star and node.table else ())
        ]
        keys.extend(_column_expr(node, column) for column in node.columns if column.aggregate is None)
        keys.extend(
            Sql().add(expr) for embed in node.embeds for expr, _ in _embed_outputs(embed, grouped=True)
        )
        for index, key in enumerate(keys):
            sql.add(", " if index else " GROUP BY ")
            sql.extend(key)
    if node.order:
        sql.add(" ORDER BY ")
        for index, term in enumerate(node.order):
            if index:
                sql.add(", ")
            sql.extend(_order_expr(node, term))
    if paged:
        page_limit = node.limit if limit is None else limit
        page_offset = node.offset if offset is None else offset
        if page_limit is not None:
            sql.add(f" LIMIT {int(page_limit)}")
        if page_offset:
            sql.add(f" OFFSET {int(page_offset)}")
    return sql


def read_statement(
    node: ReadNode,
    source: Source,
    *,
    count_exact: bool,
    limit: int | None,
    offset: int,
    prefix: Sql | None = None,
    inserted: bool = False,
    csv: bool = False,
) -> Sql:
    """One statement -> (total, page_total, body): the page as JSON text (or `csv`), and the exact count
    if asked; with `inserted`, the rows an upsert inserted too (see `insert_statement`)."""
    sql = Sql()
    if prefix is not None:
        sql.extend(prefix)
    if csv:
        sql.add(", " if prefix is not None else "WITH ")
        sql.add(f"{ident(CSV_PAGE)} AS (").extend(render_node(node, source, limit=limit, offset=offset))
        sql.add(") ")
    sql.add("SELECT ")
    if count_exact:
        sql.add("(SELECT count(*) FROM (")
        sql.extend(render_node(node, source, count_only=True))
        sql.add(') AS "pgrst_counted")')
    else:
        sql.add("NULL::bigint")
    sql.add(" AS total, count(*) AS page_total, ")
    sql.add(CSV_BODY if csv else "coalesce(json_agg(\"pgrst_row\"), '[]')::text AS body")
    if inserted:
        sql.add(f", {INSERTED}")
    if csv:
        return sql.add(f' FROM {ident(CSV_PAGE)} AS "pgrst_row"')
    sql.add(" FROM (")
    sql.extend(render_node(node, source, limit=limit, offset=offset))
    return sql.add(') AS "pgrst_row"')


#: The page a CSV body is written from (read twice: its first row's keys are the header).
CSV_PAGE = "pgrst_page"
#: PostgREST's CSV, written by Postgres: the first row's keys joined with `,`, a newline, then each row as
#: Postgres prints a record (values quoted when they hold a comma, a quote, a space, ...; quotes doubled;
#: NULL empty; json and arrays as Postgres prints them), without its parentheses, one per line.
CSV_BODY = (
    "(SELECT coalesce(string_agg(\"pgrst_key\".k, ','), '')"
    " FROM (SELECT json_object_keys(row_to_json(h)) AS k"
    f' FROM (SELECT * FROM {ident(CSV_PAGE)} LIMIT 1) AS h) AS "pgrst_key")'
    ' || chr(10) || coalesce(string_agg(substring("pgrst_row"::text, 2, length("pgrst_row"::text) - 2),'
    " chr(10)), '') AS body"
)


def explain_statement(node: ReadNode, source: Source) -> Sql:
    return Sql().add("EXPLAIN (FORMAT JSON) ").extend(render_node(node, source, count_only=True))


# ---------------------------------------------------------------------------------------------------------
# writes


MUTATION_CTE = "pgrst_mutation"


def insert_statement(
    table: Table,
    columns: Sequence[str],
    rows_json: str,
    *,
    conflict_columns: Sequence[str] | None,
    resolution: str | None,
    missing_default: bool,
    returning: bool,
    count_inserted: bool = False,
) -> Sql:
    """`INSERT ... SELECT` from the JSON array in one parameter (bulk insert is still one statement).

    `count_inserted` (an upsert that merges): as PostgREST does, every row offered adds one to the
    transaction's `pgrst.inserted` and every row merged instead takes one away, so `INSERTED` reads how
    many rows were inserted (200 or 201)."""
    target = qualified(table)
    alias = ident(table.name)
    sql = Sql().add(
        'WITH "pgrst_rows" AS (SELECT e AS j FROM jsonb_array_elements(%s::jsonb) AS e)', rows_json
    )
    if returning:
        sql.add(f", {MUTATION_CTE} AS (")
    else:
        sql.add(" ")
    sql.add(f"INSERT INTO {target} AS {alias}")
    if columns:
        sql.add(" (" + ", ".join(ident(c) for c in columns) + ")")
    sql.add(" SELECT ")
    values: list[Sql] = []
    for name in columns:
        column = table.columns[name]
        if missing_default:
            default = (column.default or "NULL").replace("%", "%%")
            values.append(
                Sql().add(f'CASE WHEN "pgrst_rows".j ? %s THEN p.{ident(name)} ELSE {default} END', name)
            )
        else:
            values.append(Sql().add(f"p.{ident(name)}"))
    for index, value in enumerate(values):
        if index:
            sql.add(", ")
        sql.extend(value)
    sql.add(f' FROM "pgrst_rows", jsonb_populate_record(NULL::{target}, "pgrst_rows".j) AS p')
    if count_inserted:
        sql.add(f" WHERE {_INSERTED_ADD} <> '0'")
    if resolution is not None:
        sql.add(" ON CONFLICT")
        if conflict_columns:
            sql.add(" (" + ", ".join(ident(c) for c in conflict_columns) + ")")
        if resolution == "merge-duplicates" and columns:
            sql.add(" DO UPDATE SET " + ", ".join(f"{ident(c)} = EXCLUDED.{ident(c)}" for c in columns))
            if count_inserted:
                sql.add(f" WHERE {_INSERTED_TAKE} <> '-1'")
        else:
            sql.add(" DO NOTHING")
    if returning:
        sql.add(f" RETURNING {alias}.*)")
    return sql


_INSERTED_SETTING = "nullif(current_setting('pgrst.inserted', true), '')"
_INSERTED_ADD = f"set_config('pgrst.inserted', (coalesce({_INSERTED_SETTING}::int, 0) + 1)::text, true)"
_INSERTED_TAKE = f"set_config('pgrst.inserted', (coalesce({_INSERTED_SETTING}::int, 0) - 1)::text, true)"
#: The rows an upsert inserted (read in the statement's outer query, once every row has been written).
INSERTED = f"coalesce({_INSERTED_SETTING}::int, 0) AS inserted"


def counted_mutation_statement(mutation: Sql) -> Sql:
    """A write whose answer carries no rows, but whose count of rows written and inserted decides it:
    one row `(page_total, inserted)`. `mutation` ends in its CTE `MUTATION_CTE`."""
    return (
        Sql().extend(mutation).add(f" SELECT count(*) AS page_total, {INSERTED} FROM {ident(MUTATION_CTE)}")
    )


def update_statement(
    table: Table,
    alias: str,
    columns: Sequence[str],
    body_json: str,
    conditions: Sequence[Condition],
    *,
    returning: bool,
    missing_default: bool = False,
    computed: Mapping[str, str] | None = None,
) -> Sql:
    target = qualified(table)
    sql = Sql()
    if returning:
        sql.add(f"WITH {MUTATION_CTE} AS (")
    sql.add(f"UPDATE {target} AS {ident(alias)} SET ")
    if not missing_default:
        sql.add(", ".join(f"{ident(c)} = p.{ident(c)}" for c in columns))
        sql.add(f" FROM jsonb_populate_record(NULL::{target}, %s::jsonb) AS p", body_json)
    else:  # a named column the body lacks takes its default (`Prefer: missing=default`)
        for index, name in enumerate(columns):
            default = (table.columns[name].default or "NULL").replace("%", "%%")
            sql.add(", " if index else "")
            sql.add(
                f'{ident(name)} = CASE WHEN "pgrst_body".j ? %s THEN p.{ident(name)} ELSE {default} END', name
            )
        sql.add(
            ' FROM (SELECT %s::jsonb AS j) AS "pgrst_body",'
            f' jsonb_populate_record(NULL::{target}, "pgrst_body".j) AS p',
            body_json,
        )
    _where(sql, alias, table, conditions, computed or {})
    if returning:
        sql.add(f" RETURNING {ident(alias)}.*)")
    return sql


def delete_statement(
    table: Table,
    alias: str,
    conditions: Sequence[Condition],
    *,
    returning: bool,
    computed: Mapping[str, str] | None = None,
) -> Sql:
    sql = Sql()
    if returning:
        sql.add(f"WITH {MUTATION_CTE} AS (")
    sql.add(f"DELETE FROM {qualified(table)} AS {ident(alias)}")
    _where(sql, alias, table, conditions, computed or {})
    if returning:
        sql.add(f" RETURNING {ident(alias)}.*)")
    return sql


def _where(
    sql: Sql, alias: str, table: Table, conditions: Sequence[Condition], computed: Mapping[str, str]
) -> None:
    for index, condition in enumerate(conditions):
        sql.add(" WHERE " if index == 0 else " AND ")
        sql.extend(render_condition(alias, table, condition, computed))


# ---------------------------------------------------------------------------------------------------------
# functions


def call_source(
    routine: Routine, args_json: str | bytes | None, arg_names: Sequence[str], *, positional: bool = False
) -> tuple[Sql, Sql]:
    """(FROM items that bind the arguments, the call expression). Arguments travel as one JSON parameter;
    a `positional` call (one unnamed parameter) passes the whole body as that parameter's value."""
    function = f"{ident(routine.schema)}.{ident(routine.name)}"
    from_sql = Sql()
    if positional:
        # The type comes from the catalog (`format_type`), never from the request.
        call = Sql().add(f"{function}(%s::{routine.parameters[0].type})", args_json)
        return from_sql, call
    types = {p.name: p.type for p in routine.parameters}
    if arg_names:
        columns = ", ".join(f"{ident(n)} {types[n]}" for n in arg_names)
        from_sql.add(f'json_to_record(%s::json) AS "pgrst_args"({columns})', args_json or "{}")
    call = Sql().add(
        f"{function}(" + ", ".join(f'{ident(n)} := "pgrst_args".{ident(n)}' for n in arg_names) + ")"
    )
    return from_sql, call


def call_statement(routine: Routine, from_args: Sql, call: Sql) -> Sql:
    """A call whose result is not read like a table's: one row `(body[, page_total])`, with the response
    GUCs the function set. `body` is the result as JSON text (NULL for void), `page_total` a set's size."""
    sql = Sql()
    if routine.return_kind == "void":
        sql.add("SELECT ").extend(call).add(" AS body")
    elif routine.returns_set:
        sql.add(
            "SELECT coalesce(json_agg(\"pgrst_value\".v), '[]')::text AS body, count(*) AS page_total FROM "
        )
        if from_args.parts:
            sql.extend(from_args).add(" CROSS JOIN LATERAL ")
        sql.extend(call).add(' AS "pgrst_value"(v)')
    else:
        sql.add("SELECT to_json(").extend(call).add(")::text AS body")
    if from_args.parts and not (routine.return_kind == "scalar" and routine.returns_set):
        sql.add(" FROM ").extend(from_args)
    return with_response_gucs(sql)


def with_response_gucs(statement: Sql) -> Sql:
    """The statement's one row plus the `response.status` / `response.headers` a function set (PostgREST's
    response GUCs). They are read in the outer query over a MATERIALIZED CTE, so only once the row (and with
    it every call of the function) exists: the SELECT list cannot be evaluated before the call."""
    return (
        Sql()
        .add('WITH "pgrst_call" AS MATERIALIZED (')
        .extend(statement)
        .add(
            ') SELECT "pgrst_call".*,'
            " nullif(current_setting('response.headers', true), '') AS response_headers,"
            " nullif(current_setting('response.status', true), '') AS response_status"
            ' FROM "pgrst_call"'
        )
    )


#: The CTE a table-typed function's rows are read from.
FUNCTION_CTE = "pgrst_source"


def function_source(from_args: Sql, call: Sql, alias: str) -> Source:
    """The rows of a function call under `alias` (`from_args` binds its arguments, see `call_source`)."""
    source_sql = Sql()
    if from_args.parts:
        source_sql.extend(from_args).add(" CROSS JOIN LATERAL ")
    source_sql.extend(call).add(f" AS {ident(alias)}")
    return Source(source_sql)


def function_read_statement(
    node: ReadNode,
    from_args: Sql,
    call: Sql,
    *,
    count_exact: bool,
    limit: int | None,
    offset: int,
    csv: bool = False,
) -> Sql:
    """A table-typed function's rows read like a table's, with the response GUCs it set.

    The call is a CTE of its own. Read twice (the page and an exact count) Postgres materializes it, so the
    function runs once, side effects and all; read once, the planner may still inline it."""
    alias = node.alias
    prefix = (
        Sql()
        .add(f"WITH {ident(FUNCTION_CTE)} AS (SELECT {ident(alias)}.* FROM ")
        .extend(function_source(from_args, call, alias).from_sql)
        .add(") ")
    )
    statement = read_statement(
        node,
        cte_source(FUNCTION_CTE, alias),
        count_exact=count_exact,
        limit=limit,
        offset=offset,
        prefix=prefix,
        csv=csv,
    )
    return with_response_gucs(statement)
