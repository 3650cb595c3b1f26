"""project_admin's right to create schemas is granted at every start (`db.roles.grant_schema_creation`):
processes starting together on one database must all start, and a start with the grant in place writes
nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg

from kilnbase.db.roles import grant_schema_creation
from tests.support.postgres import TestCluster


def _can_create(conninfo: str) -> bool:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            "select has_database_privilege('project_admin', current_database(), 'CREATE')"
        ).fetchone()
    assert row is not None
    return bool(row[0])


def test_starts_granting_at_once_all_succeed(cluster: TestCluster) -> None:
    conninfo = cluster.create_database()
    for _ in range(5):  # each round from no grant: every process has the GRANT to write
        with psycopg.connect(conninfo, autocommit=True) as conn:
            database = conn.execute("select current_database()").fetchone()
            assert database is not None
            conn.execute(f'revoke create on database "{database[0]}" from project_admin')
        assert not _can_create(conninfo)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: grant_schema_creation(conninfo), range(8)))
        assert results == [None] * 8  # (an exception would have been raised by `list`)
        assert _can_create(conninfo)
