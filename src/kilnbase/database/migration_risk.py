"""How risky a migration is, read from its syntax tree: SAFE, WARNING or DANGER, with the reasons.

DANGER loses data or opens tables (DROP TABLE/SCHEMA, TRUNCATE, DELETE or UPDATE without WHERE, dropping a
column, disabling Row Level Security), or runs dynamic SQL no check can read (EXECUTE in a DO block or a
function body); WARNING may break clients or lock for long (renames, type changes, NOT NULL on existing rows,
dropping indexes/functions/policies, grants, non-concurrent indexes, DO blocks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pglast import ast

from kilnbase.database.sql_guard import walk

_DYNAMIC_SQL = re.compile(r"\bexecute\b", re.IGNORECASE)
_DANGEROUS_DROPS = {"OBJECT_TABLE", "OBJECT_SCHEMA", "OBJECT_MATVIEW", "OBJECT_SEQUENCE", "OBJECT_TYPE"}


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
    return report


def _assess_statement(statement: Any, report: RiskReport) -> None:
    if isinstance(statement, ast.DropStmt):
        kind = _name(statement.removeType)
        label = kind.removeprefix("OBJECT_").replace("_", " ")
        level = "DANGER" if kind in _DANGEROUS_DROPS else "WARNING"
        report.add(level, f"DROP {label} removes it{' and its data' if level == 'DANGER' else ''}")
        if statement.behavior is not None and _name(statement.behavior) == "DROP_CASCADE":
            report.add("DANGER", "CASCADE also drops everything that depends on it")
    elif isinstance(statement, ast.TruncateStmt):
        report.add("DANGER", "TRUNCATE deletes every row")
    elif isinstance(statement, ast.DeleteStmt | ast.UpdateStmt):
        verb = "DELETE" if isinstance(statement, ast.DeleteStmt) else "UPDATE"
        if statement.whereClause is None:
            report.add("DANGER", f"{verb} without WHERE touches every row")
        else:
            report.add("WARNING", f"{verb} changes existing rows")
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
    """Procedural code is text the parser cannot see into: dynamic SQL in it can do anything its role can."""
    for child in walk(statement):
        if isinstance(child, ast.String) and child.sval and _DYNAMIC_SQL.search(child.sval):
            report.add("DANGER", f"{where} runs dynamic SQL (EXECUTE), which this check cannot read")
            return
    if isinstance(statement, ast.DoStmt):
        report.add("WARNING", f"{where} runs procedural code at once; only its statements are unchecked")


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
        report.add("WARNING", f"changing the type of {command.name} rewrites the table and may fail on data")
    elif subtype == "AT_SetNotNull":
        report.add("WARNING", f"SET NOT NULL on {command.name} fails if existing rows hold NULL")
    elif subtype == "AT_DropConstraint":
        report.add("WARNING", f"dropping constraint {command.name} relaxes data integrity")
    elif subtype == "AT_AddColumn":
        definition = command.def_
        constraints = [_name(c.contype) for c in (getattr(definition, "constraints", None) or ())]
        if "CONSTR_NOTNULL" in constraints and "CONSTR_DEFAULT" not in constraints:
            report.add("WARNING", "adding a NOT NULL column without a default fails on a non-empty table")
