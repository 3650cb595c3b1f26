"""Object bytes on the local disk, under `<data dir>/storage`, written so that an object is wholly there or
not there at all.

An upload streams into `incoming/<blob id>` (created exclusively, held under an exclusive `flock` while it is
written), is fsynced, then hard-linked to `blobs/<id[:2]>/<blob id>` before the metadata row that names the
blob commits; the incoming name is removed after the commit. So at any moment:

- an incoming file that is not locked belongs to an upload that died (a crash, a SIGKILL, a failed commit):
  if a row names its blob the upload had committed and only the incoming name is left to remove; otherwise
  both names are removed. `recover` does this at start, skipping the files other live processes hold.
- a row names a blob only after the blob is complete on disk, so a reader never sees a partial object.

Blobs that rows stopped using are queued in `storage.blob_garbage` by a trigger in the same transaction, and
removed by the service after the commit (or at the next start), so no blob is removed while a row names it.

Why not obstore's `LocalStore` here: its `put` stages into `<path>#<n>` and renames on completion, which is
atomic for the file but knows nothing of the metadata row, and a killed upload leaves its staging file
behind with nothing to tell it from a live one. Plain files under our own journal do both; reads are
`os.pread` in a worker thread, the same system calls obstore would make.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import anyio.to_thread

#: Read size for downloads: large enough that a 1 GB download is a few thousand thread hops.
READ_CHUNK = 512 * 1024


class TooLarge(Exception):
    """The upload passed its size limit while streaming."""


class BlobWriter:
    """One upload in progress: bytes appended as they arrive, counted against `limit`, hashed (MD5, the
    ETag S3 clients expect), the first bytes kept for content detection."""

    def __init__(self, blobs: LocalBlobs, blob_id: uuid.UUID, limit: int, sniff_bytes: int) -> None:
        self.blobs = blobs
        self.blob_id = blob_id
        self.limit = limit
        self.size = 0
        self.head = b""
        self._sniff_bytes = sniff_bytes
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.path = blobs.incoming / str(blob_id)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.published = False

    def write(self, data: bytes | memoryview) -> None:
        """Append `data` (a synchronous write: it lands in the page cache, microseconds per chunk)."""
        if not data:
            return
        self.size += len(data)
        if self.size > self.limit:
            raise TooLarge
        if len(self.head) < self._sniff_bytes:
            self.head += bytes(data[: self._sniff_bytes - len(self.head)])
        self._md5.update(data)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    @property
    def etag(self) -> str:
        return self._md5.hexdigest()

    async def publish(self) -> None:
        """Make the bytes durable and give them their blob name (the row may now name them)."""
        await anyio.to_thread.run_sync(self._publish)

    def _publish(self) -> None:
        os.fsync(self._fd)
        target = self.blobs.blob_path(self.blob_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(self.path, target)
        self.published = True

    def close(self, *, committed: bool) -> None:
        """The upload is over: committed, its incoming name goes; not, both names go."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if not committed and self.published:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.blobs.blob_path(self.blob_id))
        os.close(self._fd)  # releases the lock last: recovery never sees a half-removed upload as dead


class LocalBlobs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / "incoming"
        self.blobs = root / "blobs"

    def prepare(self) -> None:
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.blobs.mkdir(parents=True, exist_ok=True)

    def blob_path(self, blob_id: uuid.UUID | str) -> Path:
        name = str(blob_id)
        return self.blobs / name[:2] / name

    def writer(self, limit: int, sniff_bytes: int) -> BlobWriter:
        return BlobWriter(self, uuid.uuid4(), limit, sniff_bytes)

    def dead_uploads(self) -> list[uuid.UUID]:
        """Incoming files no live process holds: uploads that died before they finished."""
        dead = []
        for entry in os.scandir(self.incoming):
            try:
                blob_id = uuid.UUID(entry.name)
            except ValueError:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                continue  # a live upload
            finally:
                os.close(fd)
            dead.append(blob_id)
        return dead

    def forget_uploads(self, blob_ids: Iterable[uuid.UUID], committed: Callable[[uuid.UUID], bool]) -> None:
        """Remove what dead uploads left: the incoming name always, the blob too unless a row names it."""
        for blob_id in blob_ids:
            if not committed(blob_id):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.blob_path(blob_id))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.incoming / str(blob_id))

    def delete(self, blob_ids: Iterable[uuid.UUID | str]) -> None:
        for blob_id in blob_ids:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.blob_path(blob_id))

    def exists(self, blob_id: uuid.UUID | str) -> bool:
        return self.blob_path(blob_id).exists()

    async def read(self, blob_id: uuid.UUID | str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes `start` to `end` (exclusive) of a blob, in chunks, each read in a worker thread."""
        fd = await anyio.to_thread.run_sync(os.open, self.blob_path(blob_id), os.O_RDONLY | os.O_CLOEXEC)
        try:
            position = start
            while position < end:
                chunk = await anyio.to_thread.run_sync(
                    os.pread, fd, min(READ_CHUNK, end - position), position
                )
                if not chunk:
                    return
                position += len(chunk)
                yield chunk
        finally:
            os.close(fd)
