"""SQL on the side of an app under test: rows read straight from its database, and polling for what is
written off the request path (the usage ledger)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

T = TypeVar("T")
#: Runs a statement with its parameters and returns the rows (none for a statement that returns none).
Sql = Callable[..., list[dict[str, Any]]]


@contextlib.contextmanager
def sql_runner(database_url: str) -> Iterator[Sql]:
    """Run SQL against `database_url` (autocommit) and return the rows."""
    conn = psycopg.connect(database_url, autocommit=True, row_factory=dict_row)

    def run(query: str, *params: Any) -> list[dict[str, Any]]:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []

    try:
        yield run
    finally:
        conn.close()


def wait_for(check: Callable[[], T], timeout: float = 10.0) -> T:
    """Poll until `check()` is truthy (what is written off the request path), or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)
