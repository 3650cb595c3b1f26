"""Database errors from the admin API in InsForge's shape: a client mistake is a 4xx saying what failed."""

from __future__ import annotations

import logging

import psycopg

from kilnbase.db.availability import is_unavailable
from kilnbase.db.sqlstate import status_for
from kilnbase.http.errors import ApiError, database_unavailable

log = logging.getLogger("kilnbase.database")

#: For a table that does not exist.
LIST_TABLES = "List the tables with GET /api/database/tables."
#: The SQLSTATE classes that say the server failed, not the statement: connection (08, a statement's: a
#: dblink's, a foreign server's), insufficient resources (53), operator intervention (57), system (58) and
#: internal (XX) errors. These follow PostgREST's statuses; the other classes PostgREST answers 500 for
#: (a PL/pgSQL error, a subquery of two rows) are, in the SQL an admin sent, that SQL's mistake: a 400.
_SERVER_SIDE = ("08", "53", "57", "58", "XX")
_SERVER_SIDE_NEXT = {
    503: "The database lacks a resource right now (disk, memory, connections) or could not reach another "
    "server; retry shortly. If it lasts, the server's log and PostgreSQL's say which.",
    500: "The database failed on its side, not because of the request; the server's log has the SQLSTATE. "
    "Retry once; if it persists, check PostgreSQL's log and the server's health.",
}


class DatabaseFailure(ApiError):
    """A statement that ran and failed in the database (as opposed to a request refused before it ran)."""

    failed = True


class StatementFailed(Exception):
    """A statement's failure with the statement's text, so that a syntax error's position can be shown."""

    def __init__(self, error: psycopg.Error, statement: str) -> None:
        super().__init__(str(error))
        self.error = error
        self.statement = statement


def syntax_error(message: str, position: int, sql: str) -> DatabaseFailure:
    """A statement that does not parse: 400 with Postgres's message, and the position it points at."""
    line = sql[: position - 1].count("\n") + 1
    column = position - (sql.rfind("\n", 0, position - 1) + 1)
    near = sql[position - 1 : position + 29].splitlines()[0] if position <= len(sql) else ""
    where = f"near {near!r}" if near else "at the end of the SQL"
    return DatabaseFailure(
        400,
        "DATABASE_VALIDATION_ERROR",
        message,
        f"Syntax error at position {position} (line {line}, column {column}), {where}. "
        "Fix the SQL and retry.",
    )


#: What to do about a statement Postgres refused for a reason no rule below names, for SQL the caller wrote.
FIX_THE_SQL = "Fix the SQL as the message says and retry."


def api_error_from(exc: psycopg.Error, sql: str | None = None, *, fix: str = FIX_THE_SQL) -> DatabaseFailure:
    """`exc` as InsForge's error shape; `sql` (the statement that failed) places a syntax error; `fix`: what
    to do about a refusal no rule names, where the caller sent values rather than SQL (a file's rows)."""
    if is_unavailable(exc):
        unavailable = database_unavailable(exc)
        return DatabaseFailure(
            503, unavailable.code, unavailable.message, unavailable.next_actions, headers=unavailable.headers
        )
    sqlstate = exc.diag.sqlstate or ""
    message = exc.diag.message_primary or str(exc).strip().splitlines()[0] if str(exc) else "database error"
    if sqlstate == "42601" and sql is not None and exc.diag.statement_position:
        return syntax_error(message, int(exc.diag.statement_position), sql)
    if sqlstate == "08P01" and message.startswith("bind message supplies"):
        # Fewer params than the statement's $n placeholders: the request's mistake, not a lost connection.
        return DatabaseFailure(
            400,
            "DATABASE_INVALID_PARAMETER",
            message,
            "Send one value in params for each $n placeholder of the statement.",
        )
    if sqlstate == "42501":
        return DatabaseFailure(
            403, "DATABASE_PERMISSION_DENIED", message, "This needs rights project_admin lacks."
        )
    if sqlstate == "23505":
        return DatabaseFailure(409, "DATABASE_DUPLICATE", message, "A row with this key already exists.")
    if sqlstate.startswith("23"):
        return DatabaseFailure(
            400,
            "DATABASE_CONSTRAINT_VIOLATION",
            message,
            exc.diag.message_detail
            or "Change the values so that they meet the constraint the message names.",
        )
    if sqlstate in ("42P01", "42883", "3F000"):
        return DatabaseFailure(
            404, "DATABASE_NOT_FOUND", message, "Check the name; list tables with GET /api/database/tables."
        )
    if sqlstate == "57014":
        return DatabaseFailure(
            400, "DATABASE_VALIDATION_ERROR", message, "The statement ran past its statement timeout."
        )
    if sqlstate.startswith(_SERVER_SIDE):
        return _server_side(sqlstate, message)
    return DatabaseFailure(
        400,
        "DATABASE_VALIDATION_ERROR",
        message,
        exc.diag.message_hint or fix,
    )


def _server_side(sqlstate: str, message: str) -> DatabaseFailure:
    """A statement the server failed (`_SERVER_SIDE`): PostgREST's status (503 for insufficient resources
    and a connection's error, 500 else) with Postgres's message, as PostgREST shows it, and never its
    detail or context, which can name files and internals."""
    status = status_for(sqlstate, message, is_anonymous=False)
    log.error("database error %s (answered %d): %s", sqlstate, status, message)
    return DatabaseFailure(status, "DATABASE_INTERNAL_ERROR", message, _SERVER_SIDE_NEXT[status])
