"""PostgREST's error body `{code, message, details, hint}`, with its SQLSTATE -> HTTP status mapping
(`db/sqlstate.py`).

Everything the records engine refuses is a `RecordsError`; a database error is translated by
`from_database_error`, so a client mistake (bad column, bad value, policy violation) is never a 500.
"""

from __future__ import annotations

from typing import Any

import orjson
import psycopg
from psycopg_pool import PoolTimeout

from kilnbase.db.availability import RETRY_AFTER, DatabaseUnavailable, is_unavailable
from kilnbase.db.sqlstate import status_for


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


def from_statement_error(exc: psycopg.Error, *, is_anonymous: bool) -> RecordsError:
    """Whatever failed while a statement ran as the caller, as PostgREST's error body. A value psycopg
    itself refused to send (no SQLSTATE) is the client's: 400 22023."""
    if exc.diag.sqlstate is None and isinstance(exc, psycopg.DataError | psycopg.ProgrammingError):
        return RecordsError(400, "22023", str(exc).splitlines()[0] if str(exc) else "invalid value")
    return from_database_error(exc, is_anonymous=is_anonymous)


def unavailable_error(exc: psycopg.Error) -> RecordsError:
    """PostgREST's answers when the database cannot be had: 503 PGRST000 while it is out of reach or the
    connection broke, 504 PGRST003 when the pool gave no connection in time (too busy), with PostgREST's
    messages (clients match on them)."""
    if isinstance(exc, PoolTimeout) and not isinstance(exc, DatabaseUnavailable):
        error = RecordsError(504, "PGRST003", "Timed out acquiring connection from connection pool.")
    else:
        error = RecordsError(
            503,
            "PGRST000",
            "Database connection error. Retrying the connection.",
            str(exc).strip().splitlines()[0] if isinstance(exc, DatabaseUnavailable) else None,
            "Retry shortly; GET /api/health says when the database answers again.",
        )
    error.headers["Retry-After"] = RETRY_AFTER
    return error


def from_database_error(exc: psycopg.Error, *, is_anonymous: bool) -> RecordsError:
    if is_unavailable(exc):
        return unavailable_error(exc)
    diag = exc.diag
    sqlstate = diag.sqlstate or "XX000"
    message = diag.message_primary or str(exc).strip()
    if sqlstate == "PGRST":
        return _raised_pgrst(message, diag.message_detail)
    return RecordsError(
        status_for(sqlstate, message, is_anonymous=is_anonymous),
        sqlstate,
        message,
        diag.message_detail,
        diag.message_hint,
    )


_PGRST_HINT = (
    "MESSAGE must be a JSON object with obligatory keys: 'code', 'message' and optional keys: 'details', "
    "'hint'. DETAIL must be a JSON object with obligatory keys: 'status', 'headers' and optional key: "
    "'status_text'."
)


def _raised_pgrst(message: str, detail: str | None) -> RecordsError:
    """`RAISE SQLSTATE 'PGRST'`: the function chose the body (MESSAGE), status and headers (DETAIL) as JSON.

    Anything else than PostgREST's documented shape is 500 PGRST121, not a guess at what was meant. The
    status line's reason phrase (`status_text`) is accepted but not sent: ASGI has no way to set it."""

    def unparsable(details: str) -> RecordsError:
        return RecordsError(
            500, "PGRST121", "Could not parse JSON in the RAISE SQLSTATE 'PGRST' error", details, _PGRST_HINT
        )

    body = _json_object(message)
    if (
        body is None
        or not isinstance(body.get("code"), str)
        or not isinstance(body.get("message"), str)
        or not all(isinstance(body.get(key), str | None) for key in ("details", "hint"))
    ):
        return unparsable(f"Invalid JSON value for MESSAGE: '{message}'")
    if detail is None:
        return unparsable("DETAIL is missing in the RAISE statement")
    control = _json_object(detail)
    status = None if control is None else control.get("status")
    headers = None if control is None else control.get("headers")
    if (
        control is None
        or not isinstance(status, int)
        or isinstance(status, bool)
        or not 100 <= status <= 599
        or not isinstance(control.get("status_text"), str | None)
        or not isinstance(headers, dict)
        or not all(valid_header(name, value) for name, value in headers.items())
    ):
        return unparsable(f"Invalid JSON value for DETAIL: '{detail}'")
    error = RecordsError(status, body["code"], body["message"], body.get("details"), body.get("hint"))
    error.headers = dict(headers)
    return error


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def valid_header(name: Any, value: Any) -> bool:
    """A header a function asked for (by GUC or by a raised error) that can go on the wire as it is:
    strings of visible Latin-1 characters, so no control character can split the response."""
    return (
        isinstance(name, str)
        and isinstance(value, str)
        and bool(name)
        and all("!" <= c <= "~" and c != ":" for c in name)
        and all(c == "\t" or " " <= c <= "~" or "\xa0" <= c <= "\xff" for c in value)
    )
