"""PostgREST's table from a failed statement's SQLSTATE to an HTTP status: `mapSQLtoHTTP` in its
`src/PostgREST/Error.hs`, documented in `references/errors.rst` ("HTTP Status Codes").

The records API answers with it as it is. The admin API under `/api` follows it for the classes that say the
server, not the statement, failed (`database/database_errors.py`). A database that cannot be reached at all
is not decided here: `availability.is_unavailable` sees it first (503 with `Retry-After`).
"""

from __future__ import annotations

#: Classes (the SQLSTATE's first two characters) and their status, after the codes PostgREST names one by
#: one (`status_for`). In PostgREST's order; a class not here is the statement's mistake: 400.
_CLASSES = {
    "08": 503,  # connection exception
    "09": 500,  # triggered action exception
    "0L": 403,  # invalid grantor
    "0P": 403,  # invalid role specification
    "25": 500,  # invalid transaction state
    "28": 403,  # invalid authorization specification
    "2D": 500,  # invalid transaction termination
    "38": 500,  # external routine exception
    "39": 500,  # external routine invocation exception
    "3B": 500,  # savepoint exception
    "40": 500,  # transaction rollback
    "53": 503,  # insufficient resources
    "54": 500,  # program limit exceeded
    "55": 500,  # object not in prerequisite state
    "57": 500,  # operator intervention
    "58": 500,  # system error
    "F0": 500,  # configuration file error
    "HV": 500,  # foreign data wrapper error
    "P0": 500,  # PL/pgSQL error
    "XX": 500,  # internal error
}

_CODES = {
    "23503": 409,  # foreign_key_violation
    "23505": 409,  # unique_violation
    "25006": 405,  # read_only_sql_transaction
    "53400": 500,  # configuration_limit_exceeded
    "57P01": 503,  # admin_shutdown (a connection-level one is `is_unavailable`'s)
    "P0001": 400,  # RAISE's default
    "42P01": 404,  # undefined_table
    "42P17": 500,  # invalid_object_definition (infinite recursion in a policy)
}


def status_for(sqlstate: str, message: str, *, is_anonymous: bool) -> int:
    """The status PostgREST answers a statement that failed with `sqlstate` and primary `message` (three
    codes depend on the message), as an anonymous caller or not."""
    if sqlstate in _CODES:
        return _CODES[sqlstate]
    if sqlstate == "42501":  # insufficient_privilege
        return 401 if is_anonymous else 403
    if sqlstate == "42883":  # undefined_function; xmlagg's absence is the Accept header's (no XML output)
        return 406 if message.startswith("function xmlagg(") else 404
    if sqlstate == "21000":  # cardinality_violation; pg-safeupdate's refusal is the request's
        return 400 if message.endswith("requires a WHERE clause") else 500
    if sqlstate == "22023":  # invalid_parameter_value; a JWT's role that does not exist is the credential's
        return 401 if message.startswith("role") and message.endswith("does not exist") else 400
    if sqlstate.startswith("PT"):  # RAISE SQLSTATE 'PT402': the function chose the status
        digits = sqlstate[2:]
        return int(digits) if digits.isascii() and digits.isdigit() else 500
    return _CLASSES.get(sqlstate[:2], 400)
