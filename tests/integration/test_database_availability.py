"""`is_unavailable` tells a database that cannot be had (a 503, and a probe) from a statement that failed on
a live connection (the caller's answer), by what the server said, against a real Postgres."""

from __future__ import annotations

import psycopg
import pytest

from kilnbase.db.availability import is_unavailable


def _error_of(database_url: str, query: str) -> psycopg.Error:
    with psycopg.connect(database_url, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(query)
        assert not conn.broken  # the session goes on: the statement failed, not the connection
    return raised.value


@pytest.mark.parametrize("sqlstate", ["08006", "08001", "57P01", "57P03"])
def test_a_statement_that_raises_a_connection_sqlstate_is_not_an_outage(
    database_url: str, sqlstate: str
) -> None:
    """A function (or dblink, postgres_fdw) raising class 08 or 57P0x at ERROR: the server answered."""
    raising = f"do $$ begin raise exception 'remote gone' using errcode = '{sqlstate}'; end $$"
    exc = _error_of(database_url, raising)
    assert isinstance(exc, psycopg.OperationalError) and exc.sqlstate == sqlstate
    assert not is_unavailable(exc)


def test_a_terminated_connection_is_an_outage(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as victim, psycopg.connect(database_url) as killer:
        pid = victim.info.backend_pid
        killer.execute("select pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError) as raised:
            victim.execute("select 1")
        assert victim.broken
    assert is_unavailable(raised.value)


def test_a_refused_connection_is_an_outage() -> None:
    with pytest.raises(psycopg.OperationalError) as raised:
        psycopg.connect("host=127.0.0.1 port=1 connect_timeout=2")
    assert is_unavailable(raised.value)
