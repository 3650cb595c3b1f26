"""An agent's deletion that the approval gate let through, because when it looked there was nothing to lose,
finds objects uploaded since: the service holds it for a person instead of deleting them.

The gate's look and the call run in transactions of their own; the tests call the service as the route does
once the gate has passed the call, with the objects already there (the interleaving the race makes)."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
from starlette.testclient import TestClient

from kilnbase.capability import HeldForApproval
from kilnbase.identity.actor import Actor
from kilnbase.identity.agent_keys import AgentKey
from kilnbase.identity.principal import agent_principal
from tests.storage.conftest import BUCKETS, NewBucket
from tests.support.app import services_of
from tests.support.side_sql import sql_runner


def agent(*, approved: bool = False) -> Actor:
    """An agent key that may write storage; `approved`: running a call a person approved."""
    scopes = frozenset({"storage:write"})
    key = AgentKey(str(uuid.uuid4()), "cleaner", scopes, can_approve=False, expires_at=None)
    return Actor(agent_principal(key), approved_request=str(uuid.uuid4()) if approved else None)


def upload(client: TestClient, admin: dict[str, str], bucket: str, key: str) -> None:
    put = client.put(f"{BUCKETS}/{bucket}/objects/{key}", headers=admin, content=b"keep me")
    assert put.status_code == 200, put.text


def keys_in(client: TestClient, admin: dict[str, str], bucket: str) -> list[str]:
    listed = client.get(f"{BUCKETS}/{bucket}/objects", headers=admin)
    assert listed.status_code == 200, listed.text
    return [item["key"] for item in listed.json()["data"]]


def test_an_agents_bucket_deletion_that_finds_objects_is_held(
    client: TestClient, admin: dict[str, str], new_bucket: NewBucket
) -> None:
    bucket = new_bucket()
    upload(client, admin, bucket, "report.pdf")
    storage = services_of(client).storage
    assert client.portal is not None
    with pytest.raises(HeldForApproval) as held:
        client.portal.call(storage.delete_bucket, agent(), bucket)
    assert held.value.reason == f"deletes bucket {bucket} and the 1 object(s) in it"
    assert keys_in(client, admin, bucket) == ["report.pdf"]
    # Approved, the same call deletes the bucket and its object.
    client.portal.call(storage.delete_bucket, agent(approved=True), bucket)
    assert client.get(f"{BUCKETS}/{bucket}/objects", headers=admin).status_code == 404


def test_an_upload_landing_while_an_agent_deletes_its_empty_bucket_holds_the_deletion(
    client: TestClient, admin: dict[str, str], new_bucket: NewBucket, database_url: str
) -> None:
    """The bucket was empty when the gate looked; an object's row is being written into it (uncommitted, on
    a side connection) as the deletion runs. The deletion waits for it, counts it, and is held; the object
    stays."""
    bucket = new_bucket()
    storage = services_of(client).storage
    assert client.portal is not None
    with psycopg.connect(database_url) as uploader, sql_runner(database_url) as sql:
        uploader.execute(
            "insert into storage.objects (bucket, key, size) values (%s, 'landing.txt', 7)", (bucket,)
        )
        deletion = client.portal.start_task_soon(storage.delete_bucket, agent(), bucket)
        deadline = time.monotonic() + 30
        waiting = "select 1 from pg_stat_activity where wait_event_type = 'Lock' and query like %s"
        while not sql(waiting, "%storage.buckets%"):
            assert time.monotonic() < deadline, "the deletion never reached the bucket's row"
            time.sleep(0.02)
        uploader.commit()
        with pytest.raises(HeldForApproval) as held:
            deletion.result(timeout=30)
    assert held.value.reason == f"deletes bucket {bucket} and the 1 object(s) in it"
    assert keys_in(client, admin, bucket) == ["landing.txt"]


def test_an_agents_deletion_of_an_empty_bucket_runs(
    client: TestClient, admin: dict[str, str], new_bucket: NewBucket
) -> None:
    bucket = new_bucket()
    assert client.portal is not None
    client.portal.call(services_of(client).storage.delete_bucket, agent(), bucket)
    assert client.get(f"{BUCKETS}/{bucket}/objects", headers=admin).status_code == 404


def test_an_agents_object_deletion_that_finds_objects_is_held(
    client: TestClient, admin: dict[str, str], new_bucket: NewBucket
) -> None:
    bucket = new_bucket()
    upload(client, admin, bucket, "a.txt")
    upload(client, admin, bucket, "b.txt")
    storage = services_of(client).storage
    assert client.portal is not None
    with pytest.raises(HeldForApproval) as held:
        client.portal.call(storage.delete_objects, agent(), bucket, ["a.txt", "b.txt", "never.txt"])
    assert held.value.reason == f"deletes 2 object(s) from bucket {bucket}"
    assert keys_in(client, admin, bucket) == ["a.txt", "b.txt"]
    # Keys that name no object delete nothing, and run at once.
    nothing = client.portal.call(storage.delete_objects, agent(), bucket, ["never.txt"])
    assert nothing == [{"key": "never.txt", "status": "notFound"}]
    approved = client.portal.call(storage.delete_objects, agent(approved=True), bucket, ["a.txt"])
    assert approved == [{"key": "a.txt", "status": "deleted"}]
    assert keys_in(client, admin, bucket) == ["b.txt"]
