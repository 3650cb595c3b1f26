"""tuspy, the TUS protocol's Python client, unchanged, against a running Kilnbase server over a link that
drops in the middle of a PATCH: what arrived before the drop is kept, the client resumes from the offset
the server reports, and the object appears, whole, only when the last byte is in."""

from __future__ import annotations

import io
import secrets
import socket
import time
from urllib.parse import urlsplit

import httpx
from tusclient.client import TusClient

CHUNK = 256 * 1024
TUS = {"Tus-Resumable": "1.0.0"}


def _admin(live_keys: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {live_keys['apiKey']}"}


def _offset(url: str, headers: dict[str, str]) -> int:
    answer = httpx.head(url, headers={**headers, **TUS})
    assert answer.status_code == 200, answer.text
    return int(answer.headers["upload-offset"])


def _settled_offset(url: str, headers: dict[str, str], above: int) -> int:
    """The offset once it is past `above` and has stopped moving (the dropped request has ended)."""
    last = -1
    for _ in range(100):
        offset = _offset(url, headers)
        if offset == last and offset > above:
            return offset
        last = offset
        time.sleep(0.1)
    raise AssertionError(f"the offset did not settle past {above}: {last}")


def _patch_then_drop(url: str, headers: dict[str, str], offset: int, body: bytes, sent: int) -> None:
    """A PATCH announcing all of `body` whose connection dies after `sent` bytes of it (a flaky link)."""
    parts = urlsplit(url)
    lines = [
        f"PATCH {parts.path} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"Content-Length: {len(body)}",
        "Content-Type: application/offset+octet-stream",
        f"Upload-Offset: {offset}",
        *(f"{name}: {value}" for name, value in {**headers, **TUS}.items()),
    ]
    with socket.create_connection((parts.hostname, parts.port)) as link:
        link.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body[:sent])
        link.shutdown(socket.SHUT_RDWR)


def test_tuspy_resumes_after_the_link_drops_mid_patch(live_keys: dict[str, str]) -> None:
    admin = _admin(live_keys)
    base = live_keys["url"]
    bucket = f"tus-{secrets.token_hex(4)}"
    created = httpx.post(f"{base}/api/storage/buckets", json={"bucketName": bucket}, headers=admin)
    assert created.status_code == 201, created.text
    data = secrets.token_bytes(8 * CHUNK + 12_345)
    client = TusClient(f"{base}/api/storage/buckets/{bucket}/tus", headers=admin)
    first = client.uploader(
        file_stream=io.BytesIO(data), chunk_size=CHUNK, metadata={"key": "flaky/link.bin"}
    )
    first.upload_chunk()  # type: ignore[no-untyped-call]
    first.upload_chunk()  # type: ignore[no-untyped-call]
    assert first.url is not None
    assert _offset(first.url, admin) == 2 * CHUNK

    _patch_then_drop(first.url, admin, 2 * CHUNK, data[2 * CHUNK :], sent=CHUNK + 1000)
    # The server keeps what it read before the drop (it may not have read all that was sent), once the
    # dropped request has ended: the offset then stays put.
    kept = _settled_offset(first.url, admin, above=2 * CHUNK)
    assert kept <= 3 * CHUNK + 1000
    objects = httpx.get(f"{base}/api/storage/buckets/{bucket}/objects", headers=admin).json()
    assert objects["data"] == []  # nothing visible before the last byte

    resumed = client.uploader(file_stream=io.BytesIO(data), chunk_size=CHUNK, url=first.url)
    assert resumed.offset == kept  # from the server's offset, not from zero
    resumed.upload()
    got = httpx.get(f"{base}/api/storage/buckets/{bucket}/objects/flaky/link.bin", headers=admin)
    assert got.status_code == 200 and got.content == data
    done = httpx.head(first.url, headers={**admin, **TUS})  # finished: complete, nothing more to send
    assert done.status_code == 200 and done.headers["upload-offset"] == str(len(data))
