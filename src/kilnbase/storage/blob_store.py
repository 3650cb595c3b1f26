"""Where object bytes live: the interface both backends (local disk, an S3-compatible store) offer the
service, and the meter every upload's bytes pass through on their way (size limit, MD5, first bytes).

An upload is `begin` → `write_all` → `publish` (the bytes are complete and durable under their blob name) →
the service commits the row that names the blob → `close(committed=True)`; any failure on the way ends in
`close(committed=False)`, which removes what was written. Each backend also cleans, at start, what uploads
that died between those steps left behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from kilnbase.db.session import Database


class TooLarge(Exception):
    """The upload passed its size limit while streaming."""


class Meter:
    """Counts an upload's bytes against `limit` (raising `TooLarge` as soon as it is passed), keeps the first
    `sniff_bytes` for content detection and, with `md5`, hashes them (the ETag S3 gives an object put in one
    piece, which S3 clients may check; see `version_etag` for the others).

    MD5 runs at about 600 MB/s on one core here, slower than receiving or a disk, and was 37% of a REST
    upload's CPU: past the first megabyte, data is hashed in a thread of its own (hashlib releases the GIL),
    in order, while the event loop goes on receiving and writing."""

    _BATCH = 1024 * 1024
    #: Bytes handed to the hashing thread and not yet hashed, past which the upload waits for it: memory
    #: stays bounded when the network is faster than MD5.
    _IN_FLIGHT = 8 * 1024 * 1024

    def __init__(self, limit: int, sniff_bytes: int, *, md5: bool = False) -> None:
        self.limit = limit
        self.hashing = md5
        self.size = 0
        self.head = b""
        self._sniff_bytes = sniff_bytes
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._hasher: ThreadPoolExecutor | None = None
        self._in_flight: deque[tuple[Future[None], int]] = deque()
        self._in_flight_bytes = 0

    @classmethod
    def of_file(cls, size: int, head: bytes) -> Meter:
        """The meter of bytes already complete elsewhere, known by their size and first bytes."""
        meter = cls(size, len(head))
        meter.size, meter.head = size, head
        return meter

    def count(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise TooLarge
        if len(self.head) < self._sniff_bytes:
            self.head += data[: self._sniff_bytes - len(self.head)]
        if not self.hashing:
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= self._BATCH:
            self._submit()

    def _submit(self) -> None:
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        if self._hasher is None:
            self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kilnbase-md5")
        size = sum(len(piece) for piece in batch)
        self._in_flight.append((self._hasher.submit(self._hash, batch), size))
        self._in_flight_bytes += size

    def _hash(self, batch: list[bytes]) -> None:
        for piece in batch:
            self._md5.update(piece)

    async def metered(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                if chunk:
                    self.count(chunk)
                    while self._in_flight_bytes > self._IN_FLIGHT:
                        await self._settle_oldest()
                    yield chunk
        finally:
            await self.finish()

    async def finish(self) -> None:
        """Hash what is still pending; wait for the hashing thread."""
        if self._hasher is None:
            self._hash(self._pending)
            self._pending, self._pending_bytes = [], 0
            return
        if self._pending:
            self._submit()
        hasher, self._hasher = self._hasher, None
        while self._in_flight:
            await self._settle_oldest()
        hasher.shutdown(wait=False)

    async def _settle_oldest(self) -> None:
        future, size = self._in_flight.popleft()
        await asyncio.wrap_future(future)
        self._in_flight_bytes -= size

    @property
    def md5(self) -> str:
        """The hex MD5 of the bytes (only for a meter made with `md5=True`)."""
        if not self.hashing:
            raise RuntimeError("this upload was not hashed")
        return self._md5.hexdigest()


def version_etag(blob_id: uuid.UUID) -> str:
    """The ETag of an object written through the REST API or TUS: its blob id, new with every write, so a
    strong validator for caches and `If-None-Match` that costs nothing to compute. It has dashes on purpose:
    S3 clients that verify what they download (rclone does) check an ETag of 32 hex digits against the MD5
    of the bytes, and skip one with a dash, as they must for S3's own objects uploaded in parts. Only the S3
    endpoint's single-piece writes (PutObject, UploadPart, CopyObject) pay for an MD5: S3 promises it."""
    return str(blob_id)


class Upload(Protocol):
    blob_id: uuid.UUID

    async def write_all(self, chunks: AsyncIterator[bytes], content_type: str | None) -> None: ...

    async def publish(self) -> None: ...

    async def close(self, *, committed: bool) -> None: ...


class BlobStore(Protocol):
    #: "local" or "s3": what `/api/storage/s3/config` and the strategies report.
    kind: str

    async def start(self, database: Database) -> None:
        """Prepare, and remove what uploads that died left behind."""

    async def stop(self) -> None: ...

    async def begin(self, bucket: str) -> Upload: ...

    async def adopt(self, bucket: str, source: Path, locked_fd: int) -> Upload | None:
        """An upload whose bytes are the complete file `source` (which stays; the caller holds it open as
        `locked_fd`, under an exclusive `flock`), when the store can take it without copying; else None."""

    def read(self, bucket: str, blob_id: uuid.UUID, start: int, end: int) -> AsyncIterator[bytes]: ...

    async def delete(self, blobs: Iterable[tuple[str, uuid.UUID]]) -> None: ...

    async def presigned_get(self, bucket: str, blob_id: uuid.UUID, seconds: int) -> str | None:
        """A URL of the store itself that serves the blob for `seconds`, or None (the local disk)."""
