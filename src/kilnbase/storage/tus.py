"""Resumable uploads with the TUS 1.0 protocol (core, and the creation, termination and expiration
extensions), so a large upload over a flaky link resumes where it stopped instead of starting over.

`POST /api/storage/buckets/:b/tus` creates an upload (`Upload-Length`, `Upload-Metadata` with the object's
`key` or `filename` and `contentType`), after checking the caller's policies allow writing that key;
`HEAD` on its URL says how far it got (`Upload-Offset`); `PATCH` appends from that offset; `DELETE`
abandons it. The bytes so far are a file under the storage directory (its length is the offset, so what was
written before a crash counts); when the last byte arrives the file becomes the object, through the same
path as any upload: sniffed, made durable, and committed atomically with its row as the caller (on the
local disk the file is linked as the object's blob, not copied). Uploads expire after `TUS_EXPIRY_SECONDS`
and are then removed: at the next start, the next touch, or when an upload is created.

An upload is continued (HEAD, PATCH, DELETE, and its finish) only by the kind of caller that created it,
through its URL: the same user for a user's token, the anon role for the anon key (which has no user: the
upload's random id is then what sets one anon client's upload apart from another's, as in tusd and Supabase
Storage), any admin credential for an admin's. Anyone else is told it does not exist (404). The database
decides, from the request's own role and claims (`storage.callers_tus_upload`, migration 0201), so the rule
is written once, in SQL, for the reads and for the finish; the object is still written as the caller, so the
policies that allowed the creation must still allow the write when the last byte arrives. A HEAD that
finishes an upload writes its object, so it does that only for a caller who may write: an agent key with
only `storage:read` (or any agent key in read-only mode) is told the offset, and nothing more happens
(`TusUploads._may_finish`).

An upload becomes its object at most once, whenever the server dies: the transaction that writes the object's
row (as the caller) also marks the upload's row finished (`storage.finish_tus_upload`, migration 0103), and a
second finish (a HEAD after a crash, another process) finds the mark and fails, undoing its own write; the
file is removed only after that commit. The choices, and why:

- Marked, not deleted, and the row kept until it expires: a client whose last PATCH went unanswered (the
  link dropped, or the server died) resumes with a HEAD, and the finished row tells it the upload is
  complete (offset at its length) instead of gone (on a 404, tus-js-client uploads it all again), as tusd
  answers for a finished upload. A PATCH to it finds nothing more to take (404).
- A narrow SECURITY DEFINER function, not rights on `storage.tus_uploads`: the request roles keep none; the
  function only marks an unfinished upload of the caller's own, in the caller's own transaction.
- Not a mark set on the owner pool before or after the object's commit: that is a second transaction, the
  same window again. Not a check that an object row still names the upload's blob: it misses an object
  replaced or deleted since, and would bring the stale upload back over it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import anyio.to_thread

from kilnbase.http.errors import ApiError
from kilnbase.identity.actor import Actor
from kilnbase.identity.agent_keys import AgentKeys
from kilnbase.storage import names
from kilnbase.storage.blob_store import Meter, version_etag
from kilnbase.storage.local_blobs import try_lock
from kilnbase.storage.service import (
    FEATURE_GROUP,
    START_UPLOAD,
    TOO_LARGE,
    StorageService,
    StoredObject,
    bucket_missing,
    upload_not_found,
)
from kilnbase.storage.whole_numbers import is_whole_number

VERSION = "1.0.0"
EXTENSIONS = "creation,termination,expiration"
TUS_EXPIRY_SECONDS = 24 * 3600
_RESUME = "Send HEAD on the upload's URL for its Upload-Offset, then PATCH from there."


def _tus_error(status: int, message: str, next_actions: str) -> ApiError:
    code = "STORAGE_INVALID_PARAMETER" if status < 404 else "STORAGE_NOT_FOUND"
    return ApiError(status, code, message, next_actions)


def parse_metadata(header: str | None) -> dict[str, str]:
    """`key base64,key2 base64` -> {key: text}; 400 when malformed."""
    values: dict[str, str] = {}
    for pair in (header or "").split(","):
        pair = pair.strip()
        if not pair:
            continue
        name, _, encoded = pair.partition(" ")
        try:
            values[name] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8") if encoded else ""
        except (ValueError, UnicodeDecodeError):
            raise _tus_error(
                400,
                f"Upload-Metadata value of {name!r} is not base64 of UTF-8.",
                "Send Upload-Metadata as comma-separated 'name base64(value)' pairs, e.g. key and "
                "contentType.",
            ) from None
    return values


class TusUploads:
    def __init__(self, storage: StorageService, root: Path, agent_keys: AgentKeys) -> None:
        self.storage = storage
        self.database = storage.database
        self.root = root
        #: For the project's read-only mode for agents (`_may_finish`).
        self.agent_keys = agent_keys

    def _path(self, upload_id: uuid.UUID) -> Path:
        return self.root / str(upload_id)

    async def start(self) -> None:
        """Remove expired uploads, and files no unfinished upload names (a finished upload's row stays, to
        tell its client it is complete, until it expires)."""
        await anyio.to_thread.run_sync(lambda: self.root.mkdir(parents=True, exist_ok=True))
        await self._remove_expired()
        async with self.database.as_owner() as cur:
            await cur.execute("select id from storage.tus_uploads where finished_at is null")
            live = {str(row["id"]) for row in await cur.fetchall()}
        for entry in os.scandir(self.root):
            if entry.name not in live:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

    async def create(
        self, actor: Actor, bucket: str, length_header: str | None, metadata_header: str | None
    ) -> tuple[uuid.UUID, datetime]:
        names.bucket_name(bucket)
        if length_header is None or not is_whole_number(length_header):
            raise _tus_error(
                400,
                "Upload-Length is required (a whole number of bytes).",
                "Send the file's size in bytes as the Upload-Length header.",
            )
        length = int(length_header)
        limit = await self.storage.max_file_bytes()
        if length > limit:
            raise ApiError(
                413,
                "STORAGE_INVALID_PARAMETER",
                f"Upload-Length exceeds the maximum of {limit} bytes.",
                TOO_LARGE,
            )
        metadata = parse_metadata(metadata_header)
        key = metadata.get("key") or metadata.get("objectName")
        if not key:
            filename = metadata.get("filename") or metadata.get("name") or "file"
            key = names.generated_key(filename)
        names.object_key(key)
        if await self.storage.bucket_is_public(bucket) is None:
            raise bucket_missing(bucket)
        await self.storage.check_write(actor, bucket, key, replace=True)
        await self._remove_expired()  # (so that a server up for weeks keeps a day of uploads, not all)
        expires = datetime.now(UTC) + timedelta(seconds=TUS_EXPIRY_SECONDS)
        upload_id = uuid.uuid4()
        principal = actor.principal
        sub = principal.claims.get("sub")
        async with self.database.as_owner() as cur:
            await cur.execute(
                "insert into storage.tus_uploads (id, bucket, key, length, content_type, uploaded_by, "
                "created_by_role, expires_at) values (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    upload_id,
                    bucket,
                    key,
                    length,
                    metadata.get("contentType") or metadata.get("filetype"),
                    sub if isinstance(sub, str) and sub else None,
                    principal.db_role,
                    expires,
                ),
            )
        # The row first, then the file: a process starting meanwhile removes only files no row names.
        await anyio.to_thread.run_sync(self._create_file, upload_id)
        if length == 0:
            await self._finish_if_idle(actor, await self._row(actor, bucket, upload_id))
        return upload_id, expires

    def _create_file(self, upload_id: uuid.UUID) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path(upload_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.close(fd)

    async def _row(self, actor: Actor, bucket: str, upload_id: uuid.UUID) -> dict[str, Any]:
        """The upload, when the caller created it (the database decides, as the caller: see the module's
        docstring); 404 otherwise, 410 when it has expired."""
        async with self.database.as_caller(actor.principal, read_only=True) as cur:
            await cur.execute("select * from storage.callers_tus_upload(%s, %s)", (upload_id, bucket))
            row = await cur.fetchone()
        if row is None:
            raise upload_not_found()
        if row["expires_at"] < datetime.now(UTC):
            await self.terminate(actor, bucket, upload_id)
            raise ApiError(
                410,
                "STORAGE_NOT_FOUND",
                "The upload has expired.",
                f"{START_UPLOAD} An upload lasts {TUS_EXPIRY_SECONDS // 3600} hours.",
            )
        return row

    def offset(self, upload_id: uuid.UUID) -> int:
        try:
            return self._path(upload_id).stat().st_size
        except FileNotFoundError:
            return 0

    async def status(
        self, actor: Actor, bucket: str, upload_id: uuid.UUID, *, finish: bool = True
    ) -> dict[str, str]:
        """The upload's headers (404 unless the caller's). With `finish`, an upload whose every byte is in
        but which never became its object (the request that brought the last byte failed at the commit, or
        the server died) becomes it now: a client resuming sees a complete offset and sends nothing more,
        so its HEAD is the last chance (a failure to commit is then its answer). Only a caller who may write
        finishes it (`_may_finish`); anyone else who may see the upload is told only its offset, and the
        upload waits for its writer's HEAD. An upload that was made into its object already is complete (its
        file is gone, or goes now: the server died before removing it)."""
        row = await self._row(actor, bucket, upload_id)
        if row["finished_at"] is not None:
            await anyio.to_thread.run_sync(self._remove_file, upload_id)
            return self._headers(row, int(row["length"]))
        offset = await anyio.to_thread.run_sync(self.offset, upload_id)
        if finish and offset == int(row["length"]) and self._may_finish(actor):
            await self._finish_if_idle(actor, row)
        return self._headers(row, offset)

    def _may_finish(self, actor: Actor) -> bool:
        """May this caller's HEAD make an upload into its object? The finish writes the object, but the REST
        guard lets a HEAD through as a read: an admin's upload is continued by any admin credential, agent
        keys included, so without this an agent key with only `storage:read`, or any agent while the project
        is read-only for agents, could write the object by asking for the offset. Other callers are refused
        by their policies, at the commit, as for a PATCH."""
        principal = actor.principal
        if principal.agent is None:
            return True
        return principal.allows(FEATURE_GROUP, "write") and not self.agent_keys.read_only

    async def _finish_if_idle(self, actor: Actor, row: dict[str, Any]) -> None:
        """`_finish`, unless another request holds the upload (writing to it, or finishing it) or finished
        it since the row was read (its file then has no name left)."""
        try:
            fd = os.open(self._path(row["id"]), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            if try_lock(fd) and os.fstat(fd).st_nlink > 0:
                await self._finish(actor, row, fd)
        finally:
            os.close(fd)

    @staticmethod
    def _headers(row: dict[str, Any], offset: int) -> dict[str, str]:
        return {
            "Upload-Offset": str(offset),
            "Upload-Length": str(row["length"]),
            "Upload-Expires": format_datetime(row["expires_at"].astimezone(UTC), usegmt=True),
        }

    async def append(
        self,
        actor: Actor,
        bucket: str,
        upload_id: uuid.UUID,
        offset_header: str | None,
        body: AsyncIterator[bytes],
    ) -> tuple[dict[str, str], dict[str, Any] | None]:
        """Append the body at `Upload-Offset` (409 when it is not where the upload stands); the new headers,
        and the object once the upload is complete. 404 for an upload made into its object already (as after
        a normal finish; what the server left of it when it died is removed now).

        A caller whose policies no longer let it write the upload's key (they changed since the upload was
        created) is refused before a byte of the body is read, as a POST or PUT is: else it could have the
        server receive and keep every chunk up to the last, which the finish would then refuse. The finish
        still decides, as policies may change while the bytes stream."""
        row = await self._row(actor, bucket, upload_id)
        if offset_header is None or not is_whole_number(offset_header):
            raise _tus_error(400, "Upload-Offset is required.", _RESUME)
        if row["finished_at"] is not None:
            raise upload_not_found()
        await self.storage.check_write(actor, row["bucket"], row["key"], replace=True)
        path = self._path(upload_id)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            raise upload_not_found() from None
        try:
            if not try_lock(fd):
                raise ApiError(
                    423,
                    "STORAGE_INVALID_PARAMETER",
                    "Another request is writing to this upload.",
                    f"Wait for that request to end. {_RESUME}",
                )
            stat = os.fstat(fd)
            # Abandoned while this request waited for the lock, or finished on S3. (Finished on the local
            # disk, the file lives on as the object's blob: the offset is then the length, and a finish again
            # fails on the upload's mark.)
            if stat.st_nlink == 0:
                raise upload_not_found()
            offset = stat.st_size
            if int(offset_header) != offset:
                raise ApiError(
                    409,
                    "STORAGE_INVALID_PARAMETER",
                    f"Upload-Offset is {offset}, not {offset_header}.",
                    f"Resume with Upload-Offset: {offset}.",
                )
            remaining = int(row["length"]) - offset
            async for chunk in body:
                if len(chunk) > remaining:
                    raise _tus_error(
                        400, "The body goes past Upload-Length.", "Send only the bytes up to Upload-Length."
                    )
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                remaining -= len(chunk)
            offset = int(row["length"]) - remaining
            stored = await self._finish(actor, row, fd) if remaining == 0 else None
        finally:
            os.close(fd)
        return self._headers(row, offset), stored

    async def _finish(self, actor: Actor, row: dict[str, Any], locked_fd: int) -> dict[str, Any]:
        """The complete upload as its object, while the caller holds the upload's file open (`locked_fd`)
        under its lock, so that no other request writes or finishes it meanwhile (on this machine; the mark
        that commits with the object's row makes it once across processes and crashes). Its file is removed
        after that commit (the object is made by then, whatever happens to it); its row, marked finished,
        stays until it expires, for a client that did not hear the answer to ask again."""
        upload_id = row["id"]

        async def commit(blob_id: uuid.UUID, meter: Meter, mime: str) -> StoredObject:
            etag = version_etag(blob_id)
            return await self.storage.commit_row(
                actor,
                row["bucket"],
                row["key"],
                blob_id,
                meter.size,
                etag,
                mime,
                "tus",
                replace=True,
                finishing=upload_id,
            )

        path = self._path(upload_id)
        stored = await self.storage.store_file(row["bucket"], path, locked_fd, row["content_type"], commit)
        await anyio.to_thread.run_sync(self._remove_file, upload_id)
        return self.storage.object_json(stored)

    async def _remove_expired(self) -> None:
        async with self.database.as_owner() as cur:
            await cur.execute("delete from storage.tus_uploads where expires_at < now() returning id")
            expired = [row["id"] for row in await cur.fetchall()]
        for upload_id in expired:
            await anyio.to_thread.run_sync(self._remove_file, upload_id)

    def _remove_file(self, upload_id: uuid.UUID) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(upload_id))

    async def terminate(self, actor: Actor, bucket: str, upload_id: uuid.UUID) -> None:
        async with self.database.as_owner() as cur:
            await cur.execute(
                "delete from storage.tus_uploads where id = %s and bucket = %s", (upload_id, bucket)
            )
        self._remove_file(upload_id)
