"""Object bytes on the local disk, under `<data dir>/storage`, written so that an object is wholly there or
not there at all.

An upload streams into `incoming/<blob id>` (created exclusively, held under an exclusive `flock` while it is
written), is fsynced (most of it while it is still arriving, see `LocalUpload`), then hard-linked to
`blobs/<id[:2]>/<blob id>` before the metadata row that names the blob commits; the incoming name is removed
after the commit. So at any moment:

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

import asyncio
import contextlib
import errno
import fcntl
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio.to_thread

from kilnbase.db.session import Database

#: Read size for downloads: large enough that a 1 GB download is a few thousand thread hops.
READ_CHUNK = 512 * 1024
#: Bytes written since the last `fdatasync` past which another starts on a flusher thread, while the upload
#: goes on arriving.
FLUSH_EVERY = 32 * 1024 * 1024


class LocalUpload:
    """One upload in progress: bytes appended to `incoming/<blob id>` as they arrive, under a lock.

    With fsync on, the bytes reach the disk while the upload is still arriving: every `flush_every` bytes an
    `fdatasync` runs on one of the store's flusher threads (one at a time per upload), so the fsync in
    `publish`, which the answer waits for, only has the last few megabytes left to write instead of the whole
    object (about 0.9 s per GB on this machine's disk: the kernel would otherwise hold up to 10% of memory
    dirty before writing any). The fsync in `publish` is what makes the object durable, as before; the early
    ones only move the work. Each early one syncs a duplicate of the fd, which it closes itself, so closing
    the upload never has to wait for it; an error it meets fails the upload in `publish` (the kernel reports a
    writeback error once per open file, so the fsync after it might not)."""

    def __init__(self, blobs: LocalBlobs, blob_id: uuid.UUID, source: tuple[Path, int] | None = None) -> None:
        """A new, empty upload; or, with `source` (a path, and a descriptor of it that holds an exclusive
        `flock`), one whose bytes are that file's, already complete. It gets a second name in `incoming/`,
        and the lock the caller holds on it stands for the upload's own (a lock belongs to the open file,
        shared by `dup`), so the journal treats it as any other upload; the caller's name stays."""
        self.blobs = blobs
        self.blob_id = blob_id
        self.path = blobs.incoming / str(blob_id)
        if source is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        else:
            path, locked_fd = source
            os.link(path, self.path)
            self._fd = os.dup(locked_fd)
        self.published = False
        self._flushing: asyncio.Future[None] | None = None

    async def write_all(self, chunks: AsyncIterator[bytes], content_type: str | None) -> None:
        """Synchronous writes: each lands in the page cache in microseconds, cheaper than a thread hop."""
        unflushed = 0
        async for chunk in chunks:
            view = memoryview(chunk)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            unflushed += len(chunk)
            if unflushed >= self.blobs.flush_every and self.blobs.fsync and not self._flush_running():
                await self._flushed()  # raises what the last one met (EIO: the upload fails)
                loop = asyncio.get_running_loop()
                self._flushing = loop.run_in_executor(self.blobs.flusher, _sync_and_close, os.dup(self._fd))
                unflushed = 0

    def _flush_running(self) -> bool:
        return self._flushing is not None and not self._flushing.done()

    async def _flushed(self) -> None:
        """Wait for the early `fdatasync` in flight, if any, raising what it met."""
        flushing, self._flushing = self._flushing, None
        if flushing is not None:
            await flushing

    async def publish(self) -> None:
        """Make the bytes durable and give them their blob name (the row may now name them)."""
        await self._flushed()
        await anyio.to_thread.run_sync(self._publish)

    def _publish(self) -> None:
        """With fsync on, the new name is made durable too (its directory synced, and the one above when the
        directory is new): the row that names the blob commits next, and must not outlive the name after a
        power cut on a file system that does not order metadata like ext4 does. About 0.15 ms here."""
        if self.blobs.fsync:
            os.fsync(self._fd)
        target = self.blobs.blob_path(self.blob_id)
        made = not target.parent.is_dir()
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(self.path, target)
        self.published = True
        if self.blobs.fsync:
            _sync_directory(target.parent)
            if made:
                _sync_directory(target.parent.parent)

    async def close(self, *, committed: bool) -> None:
        flushing, self._flushing = self._flushing, None
        if flushing is not None:  # a failed upload's: it ends on its own, and what it met no longer matters
            flushing.add_done_callback(_ignore_outcome)
        await anyio.to_thread.run_sync(self._close, committed)

    def _close(self, committed: bool) -> None:
        """Committed: the incoming name goes. Not: both names go. The lock is released last, so recovery
        never sees a half-removed upload as dead."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if not committed and self.published:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.blobs.blob_path(self.blob_id))
        os.close(self._fd)


def try_lock(fd: int) -> bool:
    """Take an exclusive `flock` on `fd` without waiting; False when another open file holds one (an upload
    being written: here, or a TUS upload's)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_and_close(fd: int) -> None:
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _ignore_outcome(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class LocalBlobs:
    kind = "local"

    def __init__(self, root: Path, *, fsync: bool = True, flush_every: int = FLUSH_EVERY) -> None:
        self.root = root
        self.fsync = fsync
        self.flush_every = flush_every
        self._flusher: ThreadPoolExecutor | None = None
        self.incoming = root / "incoming"
        self.blobs = root / "blobs"

    async def start(self, database: Database) -> None:
        await anyio.to_thread.run_sync(self.prepare)
        dead = await anyio.to_thread.run_sync(self.dead_uploads)
        if dead:
            async with database.as_owner() as cur:
                await cur.execute(
                    "select blob_id from storage.objects where blob_id = any(%(ids)s) "
                    "union all select blob_id from storage.s3_multipart_parts where blob_id = any(%(ids)s)",
                    {"ids": dead},
                )
                committed = {row["blob_id"] for row in await cur.fetchall()}
            await anyio.to_thread.run_sync(self.forget_uploads, dead, committed.__contains__)

    @property
    def flusher(self) -> ThreadPoolExecutor:
        """Threads of their own for the early flushes, so that many uploads' flushes never hold up the loop's
        default executor (name resolution runs there) nor anyio's worker threads. Made on first use."""
        if self._flusher is None:
            self._flusher = ThreadPoolExecutor(max_workers=4, thread_name_prefix="kilnbase-flush")
        return self._flusher

    async def stop(self) -> None:
        """Wait for the early flushes still running, and end their threads."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            await anyio.to_thread.run_sync(flusher.shutdown)

    def prepare(self) -> None:
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.blobs.mkdir(parents=True, exist_ok=True)

    def blob_path(self, blob_id: uuid.UUID | str) -> Path:
        name = str(blob_id)
        return self.blobs / name[:2] / name

    async def begin(self, bucket: str) -> LocalUpload:
        return await anyio.to_thread.run_sync(LocalUpload, self, uuid.uuid4())

    async def adopt(self, bucket: str, source: Path, locked_fd: int) -> LocalUpload | None:
        """An upload made of a complete file under the storage directory (a finished TUS upload, which the
        caller holds open and locked as `locked_fd`): linked, not copied, so finishing a 2 GB upload costs
        an fsync of what is left instead of a second copy of every byte. None when `source` is on another
        file system (then the caller copies)."""
        try:
            return await anyio.to_thread.run_sync(LocalUpload, self, uuid.uuid4(), (source, locked_fd))
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                return None
            raise

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
                if not try_lock(fd):
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

    async def delete(self, blobs: Iterable[tuple[str, uuid.UUID]]) -> None:
        await anyio.to_thread.run_sync(self._delete, [blob_id for _bucket, blob_id in blobs])

    def _delete(self, blob_ids: list[uuid.UUID]) -> None:
        for blob_id in blob_ids:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.blob_path(blob_id))

    async def presigned_get(self, bucket: str, blob_id: uuid.UUID, seconds: int) -> str | None:
        return None

    async def read(self, bucket: str, blob_id: uuid.UUID, start: int, end: int) -> AsyncIterator[bytes]:
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
