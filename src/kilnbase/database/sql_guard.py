"""The parser guard in front of `/advance/rawsql` and custom migrations (pglast, Postgres's own parser).

Raw SQL from the API runs as `project_admin`, on a connection whose session user is the owner; the one
thing such SQL must never do is step back out of that role. So the guard refuses, by syntax tree, anything
that changes the role or session authorization (`SET ROLE`, `RESET ROLE`, `RESET ALL`, `set_config('role',
...)`), `search_path` or `statement_timeout`, transaction control, database/role/tablespace management,
`ALTER SYSTEM`, `LOAD`, and anything that does not parse. Bodies of `DO` blocks and functions are plpgsql
text the parser cannot see into, so they are refused when they contain a role, session or timeout change at
all. (The database enforces what matters either way: the request pool's login role has no privileges to
step back into, and a script's session settings are reset when its connection goes back to the pool.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pglast
from pglast import ast
from pglast.parser import ParseError

_FORBIDDEN_STATEMENTS: dict[type[Any], str] = {
    ast.TransactionStmt: "transaction control (the request runs in its own transaction)",
    ast.CreatedbStmt: "database management",
    ast.DropdbStmt: "database management",
    ast.AlterDatabaseStmt: "database management",
    ast.AlterDatabaseSetStmt: "database management",
    ast.AlterSystemStmt: "ALTER SYSTEM",
    ast.CreateRoleStmt: "role management",
    ast.AlterRoleStmt: "role management",
    ast.AlterRoleSetStmt: "role management",
    ast.DropRoleStmt: "role management",
    ast.GrantRoleStmt: "role management",
    ast.ReassignOwnedStmt: "role management",
    ast.DropOwnedStmt: "role management",
    ast.CreateTableSpaceStmt: "tablespace management",
    ast.DropTableSpaceStmt: "tablespace management",
    ast.LoadStmt: "LOAD",
    ast.CreateEventTrigStmt: "event triggers",
    ast.AlterEventTrigStmt: "event triggers",
    ast.CheckPointStmt: "CHECKPOINT",
    ast.DiscardStmt: "DISCARD",
}
_FORBIDDEN_SETTINGS = frozenset({"role", "session_authorization", "search_path", "statement_timeout"})
_BODY_ESCAPE = re.compile(
    r"\b(set|reset)\s+(local\s+|session\s+)?(role|session\s+authorization|search_path|statement_timeout|all)\b"
    r"|set_config\s*\(\s*'(role|session_authorization|search_path|statement_timeout)'",
    re.IGNORECASE,
)


class GuardRefusal(ValueError):
    """The SQL is not allowed; the message says why, for the caller."""


#: What the caller of SQL the guard refused can do.
REFUSED = "Use plain SQL on tables, views and functions, without what the message names."


class SqlSyntaxError(GuardRefusal):
    """The SQL does not parse: Postgres's own message (the parser is Postgres's) and the 1-based character
    position it points at, as Postgres reports them."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


def _syntax_error(sql: str, exc: ParseError) -> SqlSyntaxError:
    message = str(exc.args[0]) if exc.args else str(exc)
    offset = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
    if offset is None:  # "at end of input"
        return SqlSyntaxError(message, len(sql) + 1)
    return SqlSyntaxError(message, offset + 1)  # (pglast counts characters from 0)


def split_statements(sql: str) -> list[str]:
    """The statements of `sql`, each as written; a parse error is a `SqlSyntaxError`."""
    try:
        statements = pglast.split(sql, with_parser=True)
    except ParseError as exc:
        raise _syntax_error(sql, exc) from None
    return [s.strip() for s in statements if s.strip()]


def parse(sql: str) -> tuple[Any, ...]:
    try:
        return tuple(raw.stmt for raw in pglast.parse_sql(sql))
    except ParseError as exc:
        raise _syntax_error(sql, exc) from None


def check(sql: str) -> tuple[Any, ...]:
    """Parse and vet every statement; return the statement nodes."""
    statements = parse(sql)
    if not statements:
        raise GuardRefusal("no SQL statement given")
    for statement in statements:
        reason = _FORBIDDEN_STATEMENTS.get(type(statement))
        if reason is not None:
            raise GuardRefusal(f"{reason} is not allowed here")
        for node in walk(statement):
            _check_node(node)
    return statements


def _check_node(node: Any) -> None:
    if isinstance(node, ast.VariableSetStmt):
        name = (node.name or "").lower()
        if name in _FORBIDDEN_SETTINGS or name == "":
            raise GuardRefusal(f"changing {name or 'all settings'} is not allowed here")
    elif isinstance(node, ast.FuncCall):
        name = ".".join(getattr(part, "sval", "") for part in node.funcname or ()).lower()
        if name in ("set_config", "pg_catalog.set_config") and node.args:
            first = node.args[0]
            value = getattr(getattr(first, "val", None), "sval", None)
            if value is None or value.lower() in _FORBIDDEN_SETTINGS:
                raise GuardRefusal("set_config on role, search_path or statement_timeout is not allowed here")
    elif isinstance(node, ast.DoStmt | ast.CreateFunctionStmt):
        for text in _string_constants(node):
            if _BODY_ESCAPE.search(text):
                raise GuardRefusal("code bodies may not change the role, session or search_path")


def walk(node: Any) -> Iterator[Any]:
    if isinstance(node, ast.Node):
        yield node
        for name in getattr(type(node), "__slots__", ()):
            yield from walk(getattr(node, name, None))
    elif isinstance(node, list | tuple):
        for item in node:
            yield from walk(item)


def _string_constants(node: Any) -> Iterator[str]:
    for child in walk(node):
        if isinstance(child, ast.String) and child.sval:
            yield child.sval
