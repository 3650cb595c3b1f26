"""`db.sqlstate.status_for`: PostgREST's `mapSQLtoHTTP`, for the codes whose status depends on the message or
the caller, and a few whole classes (the rest are driven through real Postgres in tests/records and
tests/database)."""

from __future__ import annotations

import pytest

from kilnbase.db.sqlstate import status_for


def test_insufficient_privilege_is_401_for_anon_and_403_for_the_signed_in() -> None:
    assert status_for("42501", "permission denied for table posts", is_anonymous=True) == 401
    assert status_for("42501", "permission denied for table posts", is_anonymous=False) == 403


@pytest.mark.parametrize(
    ("sqlstate", "message", "status"),
    [
        ("21000", "DELETE requires a WHERE clause", 400),  # pg-safeupdate: the request's
        ("21000", "more than one row returned by a subquery used as an expression", 500),
        ("22023", 'role "ghost" does not exist', 401),  # a JWT's role: the credential's
        ("22023", "invalid parameter", 400),
        ("42883", "function xmlagg(integer) does not exist", 406),  # no XML output: the Accept header's
        ("42883", "function nope() does not exist", 404),
    ],
)
def test_three_codes_depend_on_the_message(sqlstate: str, message: str, status: int) -> None:
    assert status_for(sqlstate, message, is_anonymous=False) == status


def test_raise_pt_sets_the_status_only_with_digits() -> None:
    assert status_for("PT402", "pay first", is_anonymous=True) == 402
    assert status_for("PT4X2", "not a status", is_anonymous=True) == 500


def test_a_code_named_alone_comes_before_its_class() -> None:
    def status(code: str) -> int:
        return status_for(code, "", is_anonymous=False)

    assert {code: status(code) for code in ("53400", "53200", "57P01", "57014")} == {
        "53400": 500,
        "53200": 503,
        "57P01": 503,
        "57014": 500,
    }
    assert [status(code) for code in ("0LP01", "28000", "22P02")] == [403, 403, 400]
