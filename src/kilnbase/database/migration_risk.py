"""How risky a migration is, read from its syntax tree: SAFE, WARNING or DANGER, with the reasons.

DANGER loses data or opens tables (DROP TABLE/SCHEMA, TRUNCATE, DELETE or UPDATE without WHERE, dropping a
column, disabling Row Level Security), or runs dynamic SQL no check can read (EXECUTE in a DO block or a
function body); WARNING may break clients or lock for long (renames, type changes, NOT NULL on existing rows,
dropping indexes/functions/policies, grants, non-concurrent indexes, DO blocks).

A statement that deletes rows is found wherever it sits, not only at the top: in a data-modifying CTE, under
EXPLAIN ANALYZE or PREPARE, in COPY's query, in a rule's actions, in a function's body (SQL-standard, a
`LANGUAGE sql` string, or plpgsql, whose statements pglast's plpgsql parser lists), and in a DO block. A WHERE
that names no column (`WHERE true`, `WHERE 1 = 1`) counts as none, and so does a MERGE that deletes, or that
acts on every target row its source lacks (`NOT MATCHED BY SOURCE`). Approvals rely on this rating: an
agent's SQL rated DANGER waits for a person (`database.tools.dangerous_sql`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pglast
from pglast import ast
from pglast.stream import RawStream

from kilnbase.database.sql_guard import walk

_DYNAMIC_SQL = re.compile(r"\bexecute\b", re.IGNORECASE)
_DANGEROUS_DROPS = {"OBJECT_TABLE", "OBJECT_SCHEMA", "OBJECT_MATVIEW", "OBJECT_SEQUENCE", "OBJECT_TYPE"}
#: Words of a row change, looked for in procedural code that could not be parsed (then rated as if it did).
_ROW_CHANGE = re.compile(r"\b(delete|update|truncate|merge)\b", re.IGNORECASE)
#: plpgsql's parse mode of an expression that is a whole SQL statement (RAW_PARSE_DEFAULT).
_WHOLE_STATEMENT = 0


@dataclass
class RiskReport:
    level: str = "SAFE"
    factors: list[str] = field(default_factory=list)

    def add(self, level: str, reason: str) -> None:
        order = {"SAFE": 0, "WARNING": 1, "DANGER": 2}
        if order[level] > order[self.level]:
            self.level = level
        self.factors.append(f"{level}: {reason}")


def _name(value: Any) -> str:
    return str(getattr(value, "name", value))


def assess(statements: tuple[Any, ...]) -> RiskReport:
    report = RiskReport()
    for statement in statements:
        _assess_statement(statement, report)
        _assess_row_changes(statement, report)
    return report


def _assess_row_changes(statement: Any, report: RiskReport) -> None:
    """Every DELETE, UPDATE, TRUNCATE and MERGE in the statement's tree, however deep."""
    for node in walk(statement):
        if isinstance(node, ast.TruncateStmt):
            report.add("DANGER", "TRUNCATE deletes every row")
        elif isinstance(node, ast.DeleteStmt | ast.UpdateStmt):
            verb = "DELETE" if isinstance(node, ast.DeleteStmt) else "UPDATE"
            if _names_no_column(node.whereClause):
                report.add("DANGER", f"{verb} without WHERE touches every row")
            else:
                report.add("WARNING", f"{verb} changes existing rows")
        elif isinstance(node, ast.MergeStmt):
            _assess_merge(node, report)


def _names_no_column(where: Any) -> bool:
    """A WHERE that is absent, or names no column (`true`, `1 = 1`): it keeps every row."""
    return where is None or not any(isinstance(node, ast.ColumnRef) for node in walk(where))


def _assess_merge(statement: Any, report: RiskReport) -> None:
    for clause in statement.mergeWhenClauses or ():
        command, match = _name(clause.commandType), _name(clause.matchKind)
        if command == "CMD_DELETE":
            report.add("DANGER", "MERGE ... THEN DELETE deletes every row its join matches")
        elif match == "MERGE_WHEN_NOT_MATCHED_BY_SOURCE" and command == "CMD_UPDATE":
            report.add("DANGER", "MERGE ... NOT MATCHED BY SOURCE changes every row the source lacks")
        elif command == "CMD_UPDATE" and _names_no_column(statement.joinCondition):
            report.add("DANGER", "MERGE ... THEN UPDATE on a join that names no column touches every row")
        elif command == "CMD_UPDATE":
            report.add("WARNING", "MERGE changes existing rows")


def _assess_statement(statement: Any, report: RiskReport) -> None:
    if isinstance(statement, ast.DropStmt):
        kind = _name(statement.removeType)
        label = kind.removeprefix("OBJECT_").replace("_", " ")
        level = "DANGER" if kind in _DANGEROUS_DROPS else "WARNING"
        report.add(level, f"DROP {label} removes it{' and its data' if level == 'DANGER' else ''}")
        if statement.behavior is not None and _name(statement.behavior) == "DROP_CASCADE":
            report.add("DANGER", "CASCADE also drops everything that depends on it")
    elif isinstance(statement, ast.AlterTableStmt):
        for command in statement.cmds or ():
            _assess_alter(command, report)
    elif isinstance(statement, ast.RenameStmt):
        report.add("WARNING", "renaming breaks clients and queries that use the old name")
    elif isinstance(statement, ast.IndexStmt) and not statement.concurrent:
        report.add("WARNING", "CREATE INDEX without CONCURRENTLY blocks writes while it builds")
    elif isinstance(statement, ast.GrantStmt):
        report.add("WARNING", "GRANT/REVOKE changes who can read or write")
    elif isinstance(statement, ast.AlterPolicyStmt):
        report.add("WARNING", "changing a policy changes who sees which rows")
    elif isinstance(statement, ast.DoStmt):
        _assess_code_body(statement, "a DO block", report)
    elif isinstance(statement, ast.CreateFunctionStmt):
        _assess_code_body(statement, "the function body", report)
        for node in walk(statement.options):
            if (
                isinstance(node, ast.DefElem)
                and node.defname == "security"
                and getattr(node.arg, "boolval", False)
            ):
                report.add("WARNING", "SECURITY DEFINER functions bypass the caller's Row Level Security")


def _assess_code_body(statement: Any, where: str, report: RiskReport) -> None:
    """Procedural code is text the parser cannot see into: dynamic SQL in it can do anything its role can.
    Its plain statements are read (`_body_statements`) and rated as if they stood on their own."""
    for child in walk(statement):
        if isinstance(child, ast.String) and child.sval and _DYNAMIC_SQL.search(child.sval):
            report.add("DANGER", f"{where} runs dynamic SQL (EXECUTE), which this check cannot read")
            return
    if isinstance(statement, ast.DoStmt):
        report.add("WARNING", f"{where} runs procedural code at once; only its statements are unchecked")
    _assess_body_statements(statement, where, report)


def _options(statement: Any) -> dict[str, Any]:
    items = statement.args if isinstance(statement, ast.DoStmt) else statement.options
    return {str(item.defname): item.arg for item in items or () if isinstance(item, ast.DefElem)}


def _assess_body_statements(statement: Any, where: str, report: RiskReport) -> None:
    """Rate the statements of a DO block's or function's body; a body that cannot be read is rated by its
    words instead (a row change in it is taken to touch every row), so that unreadable is never safe."""
    options = _options(statement)
    language = str(getattr(options.get("language"), "sval", "plpgsql")).lower()
    body = options.get("as")
    texts = [item.sval for item in (body if isinstance(body, tuple | list) else [body]) if item is not None]
    if language not in ("sql", "plpgsql") or not texts:
        return  # SQL-standard bodies are nodes, walked with the statement; C has no SQL to read
    try:
        statements = list(_body_statements(statement, language, texts))
    except Exception:  # whatever stops the reading (a parse error, a construct the deparser lacks)
        if any(_ROW_CHANGE.search(text) for text in texts):
            report.add("DANGER", f"{where} changes rows in code this check cannot read")
        return
    inner = assess(tuple(statements))
    for factor in inner.factors:
        level, _, reason = factor.partition(": ")
        report.add(level, f"{reason} (in {where})")


def _body_statements(statement: Any, language: str, texts: list[str]) -> Iterator[Any]:
    if language == "sql":
        for text in texts:
            yield from (raw.stmt for raw in pglast.parse_sql(text))
        return
    if isinstance(statement, ast.DoStmt):
        tag = "kb"
        while f"${tag}$" in texts[0]:
            tag += "_"
        source = (
            f"create function pg_temp.do_block() returns void language plpgsql as ${tag}${texts[0]}${tag}$"
        )
    else:
        source = RawStream()(statement)
    for query in _plpgsql_queries(pglast.parse_plpgsql(source)):
        yield from (raw.stmt for raw in pglast.parse_sql(query))


def _plpgsql_queries(tree: Any) -> Iterator[str]:
    """The whole SQL statements of a parsed plpgsql function (its expressions are not statements)."""
    if isinstance(tree, dict):
        expression = tree.get("PLpgSQL_expr")
        if isinstance(expression, dict) and expression.get("parseMode", _WHOLE_STATEMENT) == _WHOLE_STATEMENT:
            yield str(expression.get("query", ""))
        for value in tree.values():
            yield from _plpgsql_queries(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _plpgsql_queries(item)


def _reads_column(expression: Any, column: str) -> bool:
    """Whether an expression names `column` (bare or qualified): a type change's USING that does not sets
    every row's value from something else (`USING ''`, `USING null`), losing what the column held."""
    for node in walk(expression):
        if isinstance(node, ast.ColumnRef) and node.fields:
            last = node.fields[-1]
            if isinstance(last, ast.String) and last.sval == column:
                return True
    return False


def _assess_alter(command: Any, report: RiskReport) -> None:
    if not isinstance(command, ast.AlterTableCmd):
        return
    subtype = _name(command.subtype)
    if subtype == "AT_DropColumn":
        report.add("DANGER", f"dropping column {command.name} deletes its data")
    elif subtype == "AT_DisableRowSecurity":
        report.add("DANGER", "disabling Row Level Security makes the table readable by anon and users")
    elif subtype == "AT_NoForceRowSecurity":
        report.add("WARNING", "the table owner is no longer subject to Row Level Security")
    elif subtype == "AT_AlterColumnType":
        using = getattr(command.def_, "raw_default", None)
        if using is not None and not _reads_column(using, str(command.name)):
            report.add(
                "DANGER",
                f"changing the type of {command.name} with a USING expression that does not read it replaces "
                "every value of the column, as dropping it loses them",
            )
        else:
            rewrite = f"changing the type of {command.name} rewrites the table and may fail on data"
            report.add("WARNING", rewrite)
    elif subtype == "AT_SetNotNull":
        report.add("WARNING", f"SET NOT NULL on {command.name} fails if existing rows hold NULL")
    elif subtype == "AT_DropConstraint":
        report.add("WARNING", f"dropping constraint {command.name} relaxes data integrity")
    elif subtype == "AT_AddColumn":
        definition = command.def_
        constraints = [_name(c.contype) for c in (getattr(definition, "constraints", None) or ())]
        if "CONSTR_NOTNULL" in constraints and "CONSTR_DEFAULT" not in constraints:
            report.add("WARNING", "adding a NOT NULL column without a default fails on a non-empty table")
