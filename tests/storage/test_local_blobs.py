"""The local backend's uploads with their early flushes: every `flush_every` bytes an `fdatasync` starts while
the upload goes on; a published blob holds every byte, a failed upload leaves no file and no open fd."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kilnbase.storage.local_blobs import LocalBlobs

CHUNK = os.urandom(16 * 1024)
#: 64 chunks of 16 KiB: 1 MiB, so about 16 early flushes at `flush_every=64 KiB` (fewer when one is running).
CHUNKS = 64


async def _chunks(count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        await asyncio.sleep(0)  # let an early flush run beside the writes, as the network would
        yield CHUNK


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _flusher_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("kilnbase-flush")]


def _files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_published_blob_holds_every_byte(tmp_path: Path) -> None:
    blobs = LocalBlobs(tmp_path, flush_every=64 * 1024)
    blobs.prepare()
    fds = _open_fds()

    async def upload() -> str:
        upload = await blobs.begin("bucket")
        await upload.write_all(_chunks(CHUNKS), None)
        await upload.publish()
        await upload.close(committed=True)
        await blobs.stop()  # waits for any early flush still running
        return str(upload.blob_id)

    blob_id = asyncio.run(upload())
    assert _flusher_threads() == []
    assert blobs.blob_path(blob_id).read_bytes() == CHUNK * CHUNKS
    assert _files(tmp_path) == [str(blobs.blob_path(blob_id).relative_to(tmp_path))]
    assert _open_fds() == fds


def test_failed_upload_leaves_nothing(tmp_path: Path) -> None:
    blobs = LocalBlobs(tmp_path, flush_every=64 * 1024)
    blobs.prepare()
    fds = _open_fds()

    async def broken() -> AsyncIterator[bytes]:
        async for chunk in _chunks(CHUNKS):
            yield chunk
        raise ConnectionResetError

    async def upload() -> None:
        upload = await blobs.begin("bucket")
        try:
            await upload.write_all(broken(), None)
        except ConnectionResetError:
            await upload.close(committed=False)
        else:
            raise AssertionError("the upload should have failed")
        await blobs.stop()  # waits for any early flush still running

    asyncio.run(upload())
    assert _flusher_threads() == []
    assert _files(tmp_path) == []
    assert _open_fds() == fds


def test_publish_makes_the_blob_name_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the row naming a blob may commit, the blob's bytes and its name are on disk: the file is
    synced, then its directory (and the directory above when the blob's directory is new)."""
    blobs = LocalBlobs(tmp_path)
    blobs.prepare()
    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        synced.append((info.st_dev, info.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    async def publish() -> Path:
        upload = await blobs.begin("bucket")
        await upload.write_all(_chunks(2), None)
        await upload.publish()
        await upload.close(committed=True)
        return blobs.blob_path(upload.blob_id)

    path = asyncio.run(publish())

    def identity(p: Path) -> tuple[int, int]:
        info = p.stat()
        return info.st_dev, info.st_ino

    assert synced == [identity(path), identity(path.parent), identity(blobs.blobs)]
    synced.clear()
    sibling_dir = path.parent
    second = asyncio.run(publish())
    if second.parent == sibling_dir:  # same two-character directory: nothing new above it to sync
        assert synced == [identity(second), identity(second.parent)]
    else:
        assert synced == [identity(second), identity(second.parent), identity(blobs.blobs)]
