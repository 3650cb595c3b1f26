"""Applies are serialized across processes by an advisory lock in the database: two at once run one after the
other, the second planning against what the first committed; a wait for the lock is bounded."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from kilnbase.http.errors import ApiError
from kilnbase.identity.actor import SYSTEM
from kilnbase.project_config.service import ApplyRequest, ProjectConfig
from tests.config.conftest import apply, bucket_names
from tests.support.app import services_of

LOCK = "hashtext('kilnbase.project_config')"


def waiting_for_the_lock(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "select count(*) from pg_locks where locktype = 'advisory' and not granted and database = "
        "(select oid from pg_database where datname = current_database())"
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_two_applies_at_once_run_one_after_the_other(
    client: TestClient, admin: dict[str, str], name: Callable[[str], str], database_url: str
) -> None:
    bucket = name("raced")
    file = {"storage": {"buckets": {bucket: {"public": True}}}}
    with psycopg.connect(database_url, autocommit=True) as holder, ThreadPoolExecutor(2) as pool:
        holder.execute(f"select pg_advisory_lock({LOCK})")  # (as a third apply in progress would)
        answers = [pool.submit(apply, client, admin, file) for _ in range(2)]
        deadline = time.monotonic() + 20
        while waiting_for_the_lock(holder) < 2:
            assert time.monotonic() < deadline, "the applies did not wait for the config lock"
            assert not any(answer.done() for answer in answers)
            time.sleep(0.05)
        holder.execute(f"select pg_advisory_unlock({LOCK})")
        bodies = [answer.result(timeout=30) for answer in answers]
    assert [body.status_code for body in bodies] == [200, 200]
    adds = sorted(len([c for c in body.json()["plan"]["changes"] if c["key"] == bucket]) for body in bodies)
    assert adds == [0, 1]  # the second saw the bucket the first made: no 409, no second add
    assert bucket in bucket_names(client, admin)


def test_a_wait_for_the_lock_is_bounded(
    client: TestClient, admin: dict[str, str], name: Callable[[str], str], database_url: str
) -> None:
    """Refused with 409 once the wait passes the service's bound (30 s by default; 200 ms here)."""
    services = services_of(client)
    impatient = ProjectConfig(
        services.core.database,
        services.core.agent_keys,
        services.auth.admin,
        services.storage,
        lock_wait="200ms",
    )
    bucket = name("waited")
    request = ApplyRequest({"storage": {"buckets": {bucket: {}}}})
    assert client.portal is not None
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute(f"select pg_advisory_lock({LOCK})")
        with pytest.raises(ApiError) as refused:
            client.portal.call(impatient.apply, SYSTEM, request)
        holder.execute(f"select pg_advisory_unlock({LOCK})")
    assert refused.value.status == 409
    assert refused.value.message == "Another config apply has held the project's config for over 200ms."
    assert bucket not in bucket_names(client, admin)
