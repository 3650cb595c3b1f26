"""Stage three: each plan rendered as the one statement it runs (PostgREST's `Query/Statements`).

`sql_builder` holds the fragments and the statement builders; this module chooses among them for a plan.
A statement that is remembered per shape is rendered once with `BODY` standing for the request's body (or
a call's arguments), the only parameter that changes between requests: `StatementTemplate.fill` puts the
body in its place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kilnbase.records.call_plan import CallPlan
from kilnbase.records.mutate_plan import MutatePlan
from kilnbase.records.read_plan import ReadPlan
from kilnbase.records.sql_builder import (
    MUTATION_CTE,
    Source,
    Sql,
    call_source,
    call_statement,
    counted_mutation_statement,
    cte_source,
    delete_statement,
    explain_statement,
    function_read_statement,
    function_source,
    insert_statement,
    read_statement,
    table_source,
    update_statement,
)

#: Stands for the body (or a call's arguments) in a template's parameters (found by identity, so no value
#: from a request can be taken for it).
BODY = "\x00pgrst-body\x00"


@dataclass(frozen=True, slots=True)
class StatementTemplate:
    """A statement's text and parameters, with the body's places among them."""

    text: str
    params: tuple[Any, ...]
    body_at: tuple[int, ...] = ()

    def fill(self, body: str | bytes) -> Sql:
        params = list(self.params)
        for index in self.body_at:
            params[index] = body
        return Sql([self.text], params)


def template(statement: Sql) -> StatementTemplate:
    """`statement`, rendered with `BODY` wherever the body goes (a count renders a source twice)."""
    params = tuple(statement.params)
    return StatementTemplate(statement.text, params, tuple(i for i, p in enumerate(params) if p is BODY))


def table_read(plan: ReadPlan, *, count_exact: bool) -> Sql:
    """One row `(total, page_total, body)`: the page as JSON text, and the exact count if asked."""
    return read_statement(
        plan.node,
        _table_source(plan),
        count_exact=count_exact,
        limit=plan.limit,
        offset=plan.offset,
        csv=plan.csv,
    )


def table_read_explained(plan: ReadPlan) -> Sql:
    """The planner's estimate of the rows a read filters (`Prefer: count=planned`)."""
    return explain_statement(plan.node, _table_source(plan))


def _table_source(plan: ReadPlan) -> Source:
    assert plan.node.table is not None
    return table_source(plan.node.table, plan.node.alias)


def mutation(plan: MutatePlan, body: str) -> Sql:
    """The write, and when the answer carries the rows written, their read as `(total, page_total, body)`."""
    table = plan.table
    returning = plan.representation or plan.counts_inserted
    if plan.kind == "insert":
        statement = insert_statement(
            table,
            plan.columns,
            body,
            conflict_columns=plan.on_conflict,
            resolution=plan.resolution,
            missing_default=plan.missing_default,
            returning=returning,
            count_inserted=plan.counts_inserted,
        )
    elif plan.kind == "update":
        statement = update_statement(
            table,
            table.name,
            plan.columns,
            body,
            plan.conditions,
            returning=returning,
            missing_default=plan.missing_default,
            computed=plan.computed,
        )
    else:
        statement = delete_statement(
            table, table.name, plan.conditions, returning=returning, computed=plan.computed
        )
    node = plan.returning
    if node is None:
        return counted_mutation_statement(statement) if plan.counts_inserted else statement
    return read_statement(
        node,
        cte_source(MUTATION_CTE, node.alias),
        count_exact=False,
        limit=None,
        offset=0,
        prefix=statement.add(" "),
        inserted=plan.counts_inserted,
        csv=plan.csv,
    )


def call(plan: CallPlan, args: str | bytes, *, count_exact: bool) -> Sql:
    """A call with its arguments as one JSON value: `(total, page_total, body)` for a table-typed result,
    else `call_statement`'s row; with the response GUCs either way."""
    from_args, call_sql = call_source(plan.routine, args, plan.arg_names, positional=plan.positional)
    read = plan.read
    if read is None:
        return call_statement(plan.routine, from_args, call_sql)
    return function_read_statement(
        read.node,
        from_args,
        call_sql,
        count_exact=count_exact,
        limit=read.limit,
        offset=read.offset,
        csv=read.csv,
    )


def call_explained(plan: CallPlan, args: str | bytes) -> Sql:
    """The planner's estimate of the rows a table-typed call returns (`Prefer: count=planned`)."""
    assert plan.read is not None
    from_args, call_sql = call_source(plan.routine, args, plan.arg_names, positional=plan.positional)
    node = plan.read.node
    return explain_statement(node, function_source(from_args, call_sql, node.alias))
