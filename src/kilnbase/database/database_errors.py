"""Database errors from the admin API in InsForge's shape: a client mistake is a 4xx saying what failed."""

from __future__ import annotations

import psycopg

from kilnbase.http.errors import ApiError


class DatabaseFailure(ApiError):
    """A statement that ran and failed in the database (as opposed to a request refused before it ran)."""


def api_error_from(exc: psycopg.Error) -> DatabaseFailure:
    sqlstate = exc.diag.sqlstate or ""
    message = exc.diag.message_primary or str(exc).strip().splitlines()[0] if str(exc) else "database error"
    if sqlstate == "42501":
        return DatabaseFailure(
            403, "DATABASE_PERMISSION_DENIED", message, "This needs rights project_admin lacks."
        )
    if sqlstate == "23505":
        return DatabaseFailure(409, "DATABASE_DUPLICATE", message, "A row with this key already exists.")
    if sqlstate.startswith("23"):
        return DatabaseFailure(400, "DATABASE_CONSTRAINT_VIOLATION", message, exc.diag.message_detail)
    if sqlstate in ("42P01", "42883", "3F000"):
        return DatabaseFailure(
            404, "DATABASE_NOT_FOUND", message, "Check the name; list tables with GET /api/database/tables."
        )
    if sqlstate == "57014":
        return DatabaseFailure(
            400, "DATABASE_VALIDATION_ERROR", message, "The statement ran past its statement timeout."
        )
    if sqlstate.startswith(("08", "53", "57", "58", "XX")):
        return DatabaseFailure(
            503, "DATABASE_INTERNAL_ERROR", "The database is unavailable", "Retry shortly."
        )
    return DatabaseFailure(400, "DATABASE_VALIDATION_ERROR", message, exc.diag.message_hint)
