"""An object is wholly there or not there: a server killed (SIGKILL) mid-upload leaves no object and, after
restart, no file; what a dead upload left at any step is cleaned at start, and live uploads are left alone."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from tests.storage.conftest import BUCKETS, NewBucket, local_blobs
from tests.support.app import services_of
from tests.support.postgres import TestCluster
from tests.support.servers import ServerProcess


def _files(root: Path) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names}


def test_start_cleans_what_dead_uploads_left(
    client: TestClient, admin: dict[str, str], new_bucket: NewBucket
) -> None:
    storage = services_of(client).storage
    blobs = local_blobs(client)
    bucket = new_bucket()
    kept = client.put(f"{BUCKETS}/{bucket}/objects/kept.txt", content=b"kept", headers=admin)
    assert kept.status_code == 200
    before = _files(blobs.root)
    # Died after its blob was linked, before its row committed: both names are garbage.
    uncommitted = uuid.uuid4()
    (blobs.incoming / str(uncommitted)).write_bytes(b"partial")
    blobs.blob_path(uncommitted).parent.mkdir(parents=True, exist_ok=True)
    os.link(blobs.incoming / str(uncommitted), blobs.blob_path(uncommitted))
    # Died after its row committed, before the incoming name went: only that name is garbage.

    async def kept_blob() -> str:
        async with services_of(client).core.database.as_owner() as cur:
            await cur.execute(
                "select blob_id::text from storage.objects where bucket = %s and key = 'kept.txt'", (bucket,)
            )
            row = await cur.fetchone()
            assert row is not None
            return str(row["blob_id"])

    assert client.portal is not None
    committed = client.portal.call(kept_blob)
    os.link(blobs.blob_path(committed), blobs.incoming / committed)
    # Still being written by a live process (it holds the lock): left alone.
    live = blobs.incoming / str(uuid.uuid4())
    with live.open("wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        client.portal.call(storage.start)
        assert live.exists()
    live.unlink()
    assert _files(blobs.root) == before
    assert client.get(f"{BUCKETS}/{bucket}/objects/kept.txt").content == b"kept"


@pytest.fixture
def server(cluster: TestCluster, tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data", env={"DATABASE_URL": cluster.create_database("crash")})
    process.start()
    yield process
    process.kill()


def test_sigkill_mid_upload_leaves_nothing(server: ServerProcess) -> None:
    api_key = json.loads((server.data_dir / "keys.json").read_text())["api_key"]
    headers = {"Authorization": f"Bearer {api_key}"}
    assert (
        httpx.post(f"{server.url}{BUCKETS}", json={"bucketName": "crash"}, headers=headers).status_code == 201
    )
    incoming = server.data_dir / "storage" / "incoming"
    # Half of a 4 MB upload, then the server dies.
    with socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.sendall(
            (
                f"PUT {BUCKETS}/crash/objects/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {api_key}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {4 * 1024 * 1024}\r\n\r\n"
            ).encode()
            + b"x" * (2 * 1024 * 1024)
        )
        deadline = time.monotonic() + 30
        while not any(path.stat().st_size > 0 for path in incoming.iterdir()):
            assert time.monotonic() < deadline, "the upload never reached the disk"
            time.sleep(0.01)
        server.kill()
    assert list(incoming.iterdir()), "the killed upload left its partial file (to be cleaned at start)"
    server.start()
    assert list(incoming.iterdir()) == []
    assert _files(server.data_dir / "storage" / "blobs") == set()
    listed = httpx.get(f"{server.url}{BUCKETS}/crash/objects", headers=headers).json()
    assert listed["data"] == []
    assert httpx.get(f"{server.url}{BUCKETS}/crash/objects/big.bin", headers=headers).status_code == 404
