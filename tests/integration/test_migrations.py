"""Migrations apply in order, once, each in its own transaction; edited or failing files are refused."""

from __future__ import annotations

import base64
import hashlib
import secrets
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg.types.json import Jsonb

from kilnbase.db.migrate import Migration, MigrationError, apply_migrations, discover
from tests.support.postgres import TestCluster


@pytest.fixture
def empty_database(cluster: TestCluster) -> str:
    name = f"empty_{secrets.token_hex(4)}"
    with psycopg.connect(cluster.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return cluster.conninfo(name)


def applied_versions(conninfo: str) -> list[int]:
    with psycopg.connect(conninfo) as conn:
        return [row[0] for row in conn.execute("select version from system.migrations order by version")]


def test_files_are_discovered_in_version_order() -> None:
    versions = [m.version for m in discover()]
    assert versions == sorted(versions) and versions[:3] == [1, 2, 3]


def test_applying_twice_applies_nothing_the_second_time(empty_database: str) -> None:
    first = apply_migrations(empty_database)
    assert [m.version for m in first] == [m.version for m in discover()]
    assert apply_migrations(empty_database) == []
    assert applied_versions(empty_database) == [m.version for m in discover()]


def test_concurrent_starts_apply_each_migration_once(empty_database: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: apply_migrations(empty_database), range(4)))
    assert sorted(len(r) for r in results) == [0, 0, 0, len(discover())]


def test_an_edited_applied_migration_is_refused(empty_database: str) -> None:
    apply_migrations(empty_database)
    original = discover()[0]
    edited = Migration(original.version, original.name, original.sql + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        apply_migrations(empty_database, [edited])


def test_a_failing_migration_changes_nothing(empty_database: str) -> None:
    apply_migrations(empty_database)
    broken = Migration(
        9999, "broken", "create table public.half_done (id int);\nselect * from no_such_table;"
    )
    with pytest.raises(psycopg.errors.UndefinedTable):
        apply_migrations(empty_database, [*discover(), broken])
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("select to_regclass('public.half_done')").fetchone() == (None,)
    assert 9999 not in applied_versions(empty_database)


def test_resumable_uploads_from_before_0201_keep_their_creator(empty_database: str) -> None:
    """Migration 0201 names each upload's creator by role: an admin's, a user's and an anon one made before
    it stay continuable by whoever could continue them (and anon's, stuck before, by anon now)."""
    before = [m for m in discover() if m.version < 201]
    apply_migrations(empty_database, before)
    with psycopg.connect(empty_database) as conn:
        conn.execute("insert into storage.buckets (name) values ('old')")
        for key, uploaded_by, by_admin in (
            ("admin", None, True),
            ("user", "u-1", False),
            ("anon", None, False),
        ):
            conn.execute(
                "insert into storage.tus_uploads (bucket, key, length, uploaded_by, created_by_admin, "
                "expires_at) values ('old', %s, 1, %s, %s, now() + interval '1 day')",
                (key, uploaded_by, by_admin),
            )
    apply_migrations(empty_database)
    with psycopg.connect(empty_database) as conn:
        rows = conn.execute("select key, uploaded_by, created_by_role from storage.tus_uploads order by key")
        assert rows.fetchall() == [
            ("admin", None, "project_admin"),
            ("anon", None, "anon"),
            ("user", "u-1", "authenticated"),
        ]


def test_change_requests_from_before_0202_keep_their_files_size_and_hash(empty_database: str) -> None:
    """Migration 0202 keeps a held upload's size and SHA-256 with its change request: the uploads held
    before it (base64, text, or base64 that is not) are summarised as it applies; other calls have none."""
    apply_migrations(empty_database, [m for m in discover() if m.version < 202])
    calls = {
        "base64": ("upload-object", {"key": "a", "base64Data": base64.b64encode(b"held bytes").decode()}),
        "text": ("upload-object", {"key": "b", "text": "held text"}),
        "garbled": ("upload-object", {"key": "c", "base64Data": "not base64!"}),
        "drop": ("delete-table", {"tableName": "t"}),
    }
    with psycopg.connect(empty_database) as conn:
        for reason, (tool, arguments) in calls.items():
            conn.execute(
                "insert into system.change_requests (tool, arguments, reason, requested_by, agent_key) "
                "values (%s, %s, %s, 'agent:old', gen_random_uuid())",
                (tool, Jsonb(arguments), reason),
            )
    apply_migrations(empty_database)
    with psycopg.connect(empty_database) as conn:
        rows = conn.execute("select reason, file_summary from system.change_requests").fetchall()
    digest = {text: hashlib.sha256(text).hexdigest() for text in (b"held bytes", b"held text")}
    assert dict(rows) == {
        "base64": {"argument": "base64Data", "bytes": 10, "sha256": digest[b"held bytes"]},
        "text": {"argument": "text", "bytes": 9, "sha256": digest[b"held text"]},
        "garbled": {"argument": "base64Data", "bytes": None, "sha256": None},
        "drop": None,
    }
