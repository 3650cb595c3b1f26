"""Where object bytes live: the interface both backends (local disk, an S3-compatible store) offer the
service, and the meter every upload's bytes pass through on their way (size limit, MD5, first bytes).

An upload is `begin` → `write_all` → `publish` (the bytes are complete and durable under their blob name) →
the service commits the row that names the blob → `close(committed=True)`; any failure on the way ends in
`close(committed=False)`, which removes what was written. Each backend also cleans, at start, what uploads
that died between those steps left behind.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

from kilnbase.db.session import Database


class TooLarge(Exception):
    """The upload passed its size limit while streaming."""


class Meter:
    """Counts an upload's bytes against `limit` (raising `TooLarge` as soon as it is passed), hashes them
    (MD5: the ETag S3 clients expect) and keeps the first `sniff_bytes` for content detection."""

    def __init__(self, limit: int, sniff_bytes: int) -> None:
        self.limit = limit
        self.size = 0
        self.head = b""
        self._sniff_bytes = sniff_bytes
        self._md5 = hashlib.md5(usedforsecurity=False)

    def count(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise TooLarge
        if len(self.head) < self._sniff_bytes:
            self.head += data[: self._sniff_bytes - len(self.head)]
        self._md5.update(data)

    async def metered(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if chunk:
                self.count(chunk)
                yield chunk

    @property
    def etag(self) -> str:
        return self._md5.hexdigest()


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

    def read(self, bucket: str, blob_id: uuid.UUID, start: int, end: int) -> AsyncIterator[bytes]: ...

    async def delete(self, blobs: Iterable[tuple[str, uuid.UUID]]) -> None: ...

    async def presigned_get(self, bucket: str, blob_id: uuid.UUID, seconds: int) -> str | None:
        """A URL of the store itself that serves the blob for `seconds`, or None (the local disk)."""
