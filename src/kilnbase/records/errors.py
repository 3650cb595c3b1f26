"""PostgREST's error body `{code, message, details, hint}` and its SQLSTATE -> HTTP status mapping.

Everything the records engine refuses is a `RecordsError`; a database error is translated by
`from_database_error`, so a client mistake (bad column, bad value, policy violation) is never a 500.
"""

from __future__ import annotations

from typing import Any

import psycopg


class RecordsError(Exception):
    """A refusal in PostgREST's shape. `code` is a PGRSTxxx code or a SQLSTATE."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.hint = hint
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "details": self.details, "hint": self.hint, "message": self.message}


def parse_error(message: str, details: str | None = None) -> RecordsError:
    """PGRST100: the query string does not follow the grammar."""
    return RecordsError(400, "PGRST100", message, details)


def status_for_sqlstate(sqlstate: str, is_anonymous: bool) -> int:
    """PostgREST's table (errors.rst), applied to the SQLSTATE of a failed statement."""
    if sqlstate in ("23505", "23503"):
        return 409
    if sqlstate == "42501":
        return 401 if is_anonymous else 403
    if sqlstate in ("42P01", "42883"):
        return 404
    if sqlstate == "25006":
        return 405
    if sqlstate == "P0001":
        return 400
    if sqlstate.startswith(("08", "53")):
        return 503
    if sqlstate in ("57014", "XX000") or sqlstate.startswith(("58", "F0", "P0", "XX")):
        return 500
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    return 400


def from_database_error(exc: psycopg.Error, *, is_anonymous: bool) -> RecordsError:
    diag = exc.diag
    sqlstate = diag.sqlstate or "XX000"
    message = diag.message_primary or str(exc).strip()
    return RecordsError(
        status_for_sqlstate(sqlstate, is_anonymous),
        sqlstate,
        message,
        diag.message_detail,
        diag.message_hint,
    )
