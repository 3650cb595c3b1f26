"""An upload the server will refuse is refused before its body is received: an unknown bucket, or a caller
whose policies do not let it write there, gets its answer while the client is still sending, and the
server writes none of the bytes (else anyone with the anon key could have it write gigabytes only to throw
them away). Over a real socket, which alone shows when the server answers: the body is sent only in part,
and the answer must come all the same."""

from __future__ import annotations

import http.client
import json
import re
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from kilnbase.app import KilnbaseApp, create_app
from kilnbase.config import Settings
from kilnbase.storage.local_blobs import LocalBlobs
from tests.storage.conftest import BUCKETS, MAX_FILE_SIZE
from tests.support.uvicorn_thread import UvicornThread

#: The file's size the client declares: within the size limit, so that only the policies refuse it.
FILE_SIZE = MAX_FILE_SIZE - 64 * 1024
#: What the client sends of the file before it waits for an answer.
SENT = 16 * 1024
BOUNDARY = "kilnbase-test-boundary"


@dataclass
class Served:
    url: str
    port: int
    app: KilnbaseApp

    def headers(self, key: Literal["api_key", "anon_key"]) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.app.services.core.keys.ring.current(key)}"}

    def stored_files(self) -> set[Path]:
        blobs = self.app.services.storage.blobs
        assert isinstance(blobs, LocalBlobs)
        return {p for root in (blobs.blobs, blobs.incoming) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def served(settings: Settings) -> Iterator[Served]:
    app = create_app(settings)
    assert isinstance(app, KilnbaseApp)
    server = UvicornThread(app)
    server.start()
    yield Served(server.url, server.port, app)
    server.stop()


@pytest.fixture
def private_bucket(served: Served) -> str:
    """A private bucket with no policy for the anon role: anon may not write to it."""
    name = f"b-{secrets.token_hex(5)}"
    created = httpx.post(
        f"{served.url}{BUCKETS}",
        json={"bucketName": name, "isPublic": False},
        headers=served.headers("api_key"),
    )
    assert created.status_code == 201, created.text
    return name


def _multipart_head(filename: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def _answer_to_a_partial_body(
    served: Served, method: str, path: str, headers: dict[str, str], content_type: str, head: bytes
) -> tuple[int, dict[str, Any]]:
    """Send the request line, headers and `head`, then `SENT` bytes of a `FILE_SIZE` file (the rest never
    comes), and read the answer: its status and JSON body. Fails when the server waits for the rest."""
    tail = f"\r\n--{BOUNDARY}--\r\n".encode() if head else b""
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: 127.0.0.1:{served.port}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(head) + FILE_SIZE + len(tail)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + head + b"x" * SENT)
        answer = http.client.HTTPResponse(conn)
        try:
            answer.begin()
            body = answer.read()
        except TimeoutError:
            pytest.fail("the server waited for the rest of the body before it answered")
        return answer.status, json.loads(body)


def _nothing_stored(served: Served, bucket: str, before: set[Path]) -> None:
    listed = httpx.get(f"{served.url}{BUCKETS}/{bucket}/objects", headers=served.headers("api_key"))
    assert listed.status_code == 200 and listed.json()["data"] == []
    assert served.stored_files() == before


@pytest.mark.parametrize("form", [True, False], ids=["multipart", "raw"])
def test_anon_post_to_a_bucket_it_may_not_write_is_refused_before_the_body(
    served: Served, private_bucket: str, form: bool
) -> None:
    """POST makes its own key (from the file's name); the caller's policies decide on that key as soon as
    it is known, with the answer the commit would have given."""
    before = served.stored_files()
    status, error = _answer_to_a_partial_body(
        served,
        "POST",
        f"{BUCKETS}/{private_bucket}/objects" + ("" if form else "?filename=report.bin"),
        served.headers("anon_key"),
        f"multipart/form-data; boundary={BOUNDARY}" if form else "application/octet-stream",
        _multipart_head("report.bin") if form else b"",
    )
    assert status == 403
    assert error["error"] == "STORAGE_PERMISSION_DENIED" and error["statusCode"] == 403
    key = r"report-\d+-[0-9a-f]{6}\.bin"  # the generated key, as the commit would have named it
    message = rf'You do not have permission to write "{key}" in bucket "{private_bucket}"'
    assert re.fullmatch(message, error["message"]), error["message"]
    assert error["nextActions"]
    _nothing_stored(served, private_bucket, before)


def test_anon_put_to_a_bucket_it_may_not_write_is_refused_before_the_body(
    served: Served, private_bucket: str
) -> None:
    before = served.stored_files()
    status, error = _answer_to_a_partial_body(
        served,
        "PUT",
        f"{BUCKETS}/{private_bucket}/objects/drop/report.bin",
        served.headers("anon_key"),
        "application/octet-stream",
        b"",
    )
    assert (status, error["error"]) == (403, "STORAGE_PERMISSION_DENIED")
    message = f'You do not have permission to write "drop/report.bin" in bucket "{private_bucket}"'
    assert error["message"] == message
    _nothing_stored(served, private_bucket, before)


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_upload_to_an_unknown_bucket_is_refused_before_the_body(served: Served, method: str) -> None:
    before = served.stored_files()
    path = f"{BUCKETS}/no-such-bucket/objects" + ("/report.bin" if method == "PUT" else "")
    status, error = _answer_to_a_partial_body(
        served,
        method,
        path,
        served.headers("anon_key"),
        f"multipart/form-data; boundary={BOUNDARY}",
        _multipart_head("report.bin"),
    )
    assert (status, error["error"]) == (404, "STORAGE_NOT_FOUND")
    assert error["message"] == 'Bucket "no-such-bucket" does not exist'
    assert served.stored_files() == before


def test_a_tus_patch_the_callers_policies_no_longer_allow_is_refused_before_the_chunk(
    served: Served, private_bucket: str, database_url: str
) -> None:
    """Anon starts a resumable upload while a policy lets it write, sends a first chunk, and loses the right
    to write (the policy is dropped): its next PATCH is answered 403 while the chunk is still coming, and the
    upload's stored size stays where it was."""
    import base64

    import psycopg

    anon = served.headers("anon_key")
    tus = {**anon, "Tus-Resumable": "1.0.0"}
    first = 1000
    policy = f"anon_tus_write_{private_bucket}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            f'create policy "{policy}" on storage.objects for insert to anon '
            f"with check (bucket = '{private_bucket}')"
        )
    meta = "key " + base64.b64encode(b"drop/resumed.bin").decode()
    created = httpx.post(
        f"{served.url}{BUCKETS}/{private_bucket}/tus",
        headers={**tus, "Upload-Length": str(first + FILE_SIZE), "Upload-Metadata": meta},
    )
    assert created.status_code == 201, created.text
    url = f"{served.url}{created.headers['location']}"
    patch = {**tus, "Content-Type": "application/offset+octet-stream"}
    sent = httpx.patch(url, content=b"x" * first, headers={**patch, "Upload-Offset": "0"})
    assert sent.status_code == 204, sent.text
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'drop policy "{policy}" on storage.objects')

    status, error = _answer_to_a_partial_body(
        served,
        "PATCH",
        created.headers["location"],
        {**tus, "Upload-Offset": str(first)},
        "application/offset+octet-stream",
        b"",
    )
    assert (status, error["error"]) == (403, "STORAGE_PERMISSION_DENIED")
    assert (
        error["message"]
        == f'You do not have permission to write "drop/resumed.bin" in bucket "{private_bucket}"'
    )
    offset = httpx.head(url, headers=tus)
    assert offset.status_code == 200 and offset.headers["upload-offset"] == str(first)
