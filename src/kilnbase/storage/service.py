"""The storage service: buckets (admin), objects (any caller, decided by RLS on `storage.objects`), the
storage configuration, signed URLs and the upload/download strategies the SDK asks for.

Every object operation runs as the caller on the request pool (`Database.as_caller`): the owner policies by
default, whatever policies the project wrote, and project_admin's policy for the API key and admin sessions.
A public bucket's objects are read without a caller, as project_admin (InsForge's rule: public means anyone
may download). Buckets and the configuration are Kilnbase's own bookkeeping, written on the owner pool by an
admin and audited. Bytes go through `LocalBlobs`; see there for how an object is wholly there or not at all.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import anyio.to_thread
from psycopg import AsyncCursor
from psycopg import errors as pg_errors
from psycopg.rows import DictRow

from kilnbase import audit
from kilnbase.capability import HeldForApproval
from kilnbase.config import Settings
from kilnbase.db.session import Database
from kilnbase.http.credential_refusals import no_token
from kilnbase.http.errors import ApiError, require_admin_actor
from kilnbase.identity.actor import SYSTEM_PRINCIPAL, Actor
from kilnbase.identity.principal import Principal
from kilnbase.keys.secret_box import SecretBox
from kilnbase.storage import content_types, names
from kilnbase.storage.blob_store import BlobStore, Meter, TooLarge, Upload, version_etag
from kilnbase.storage.local_blobs import LocalBlobs
from kilnbase.storage.s3_access_keys import S3AccessKeys
from kilnbase.storage.s3_blobs import S3Blobs
from kilnbase.storage.signed_urls import MAX_SECONDS, UrlSigner, clamp_expiry
from kilnbase.storage.transforms import AS_STORED, MAX_SOURCE_BYTES, TRANSFORMABLE, Transform, TransformCache
from kilnbase.storage.upload_body import ReceivedFile, open_upload

MODULE = "STORAGE"
#: Storage's feature group, as agent keys' scopes name it (`storage:read`, `storage:write`).
FEATURE_GROUP = "storage"
T = TypeVar("T")
MIB = 1024 * 1024
DEFAULT_MAX_FILE_MB = 50
_GARBAGE_BATCH = 500
#: An S3 multipart upload untouched this long is removed with its parts (as MinIO removes stale uploads): a
#: client that died mid-upload would otherwise leave its parts' bytes for good, with no way for an S3 client
#: to find the upload (ListMultipartUploads is not offered).
MULTIPART_EXPIRY = timedelta(days=7)

#: An upload's row, new: needs only an INSERT policy. No conflict target on purpose: `ON CONFLICT (bucket,
#: key)` makes Postgres require SELECT on those columns, and so apply the SELECT policies to the new row (as
#: `DO UPDATE` does), which is what refused every upload under an INSERT-only policy. The only other unique
#: column is `blob_id`, freshly generated for every upload.
_INSERT_OBJECT = (
    "insert into storage.objects (bucket, key, size, mime_type, etag, blob_id, uploaded_by, uploaded_via, "
    "uploaded_at) values (%(bucket)s, %(key)s, %(size)s, %(mime_type)s, %(etag)s, %(blob_id)s, "
    "%(uploaded_by)s, %(via)s, %(at)s) on conflict do nothing"
)
#: The same upload over an object already at its key: needs UPDATE and SELECT policies that cover it (a row
#: they hide is left alone, and nothing is updated), as Supabase Storage's upsert. `uploaded_by` stays: a
#: replacement does not take over the object (InsForge keeps it too).
_REPLACE_OBJECT = (
    "update storage.objects set size = %(size)s, mime_type = %(mime_type)s, etag = %(etag)s, "
    "blob_id = %(blob_id)s, uploaded_via = %(via)s, uploaded_at = %(at)s "
    "where bucket = %(bucket)s and key = %(key)s"
)
_OBJECT_COLUMNS = "bucket, key, size, mime_type, etag, blob_id, uploaded_at"


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    size: int
    mime_type: str | None
    etag: str | None
    blob_id: uuid.UUID
    uploaded_at: datetime

    @staticmethod
    def of(row: dict[str, Any]) -> StoredObject:
        return StoredObject(
            row["bucket"],
            row["key"],
            int(row["size"]),
            row["mime_type"],
            row["etag"],
            row["blob_id"],
            row["uploaded_at"],
        )


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: For a file over the upload limit.
TOO_LARGE = "Upload a smaller file, or raise maxFileSizeMb (PUT /api/storage/config)."


def not_found(what: str, next_actions: str) -> ApiError:
    return ApiError(404, "STORAGE_NOT_FOUND", what, next_actions)


LIST_OBJECTS = "Check the key; GET /api/storage/buckets/<bucket>/objects lists the objects you can read."
#: For a resumable upload that is not there to continue.
START_UPLOAD = "Start a new upload with POST /api/storage/buckets/<bucket>/tus."


def upload_not_found() -> ApiError:
    """A TUS upload that does not exist, is finished, or is not the caller's (one answer for all, so as not
    to tell them apart)."""
    return not_found("Upload not found", START_UPLOAD)


def bucket_missing(bucket: str) -> ApiError:
    return not_found(
        f'Bucket "{bucket}" does not exist', "Create the bucket first using POST /api/storage/buckets"
    )


def _denied(bucket: str, key: str, verb: str = "write") -> ApiError:
    return ApiError(
        403,
        "STORAGE_PERMISSION_DENIED",
        f'You do not have permission to {verb} "{key}" in bucket "{bucket}"',
        "A policy on storage.objects decides; by default users may write and read only their own objects.",
    )


def _already_exists(bucket: str, key: str) -> ApiError:
    return ApiError(
        409,
        "STORAGE_ALREADY_EXISTS",
        f'Object "{key}" already exists in bucket "{bucket}"',
        "Upload again (POST .../objects generates a new key), or PUT .../objects/<key> to replace it.",
    )


def _replace_denied(bucket: str, key: str) -> ApiError:
    return ApiError(
        403,
        "STORAGE_PERMISSION_DENIED",
        f'An object already exists at "{key}" in bucket "{bucket}", and your policies do not let you '
        "replace it",
        "Upload to another key, or add UPDATE and SELECT policies on storage.objects that cover this object "
        "(creating an object needs only an INSERT policy; replacing one needs all three).",
    )


def bucket_deletion_reason(bucket: str, count: int) -> str:
    """Why an agent's deletion of a bucket holding `count` objects waits for a person."""
    return f"deletes bucket {bucket} and the {count} object(s) in it"


def objects_deletion_reason(bucket: str, count: int) -> str:
    """Why an agent's deletion of `count` existing objects waits for a person."""
    return f"deletes {count} object(s) from bucket {bucket}"


def agent_replace_refused(bucket: str, key: str) -> ApiError:
    """An agent key's upload over an object already at `key`, on a path that cannot wait for approval (a
    presigned or resumable upload, or an object that appeared while the upload streamed): the old bytes
    would be lost with no undo, as by a delete, which waits for a person."""
    return ApiError(
        403,
        "FORBIDDEN",
        f'An agent key may not replace object "{key}" in bucket "{bucket}" without a person\'s approval: '
        "its current bytes would be lost.",
        "Upload it with PUT .../objects/<key> or the upload-object tool (at most 4 MB), which waits for "
        "approval; delete the object first (held for approval) and upload again; or upload to a new key.",
    )


async def _rows_written(cur: AsyncCursor[DictRow]) -> int:
    """How many rows the cursor's last statement wrote. Inside `Database.as_caller`'s pipeline the count
    arrives only with a sync (its explicit BEGIN keeps the transaction open across it)."""
    async with cur.connection.pipeline() as pipeline:
        await pipeline.sync()
    return cur.rowcount


async def _write_object_row(cur: AsyncCursor[DictRow], row: dict[str, Any], *, replace: bool) -> bool:
    """Write an upload's row, as the caller (`cur`), the way Supabase Storage does: an INSERT, which needs
    only the INSERT policies; when an object is at the key already, with `replace` an UPDATE of it, which
    needs UPDATE and SELECT policies, and without, 409. True when it replaced an object.

    When the UPDATE finds nothing, either the caller's policies hide or forbid the object (403), or it was
    deleted since the INSERT found it: then the INSERT is tried once more (READ COMMITTED: each statement
    sees what committed before it)."""
    for _attempt in range(2):
        await cur.execute(_INSERT_OBJECT, row)
        if await _rows_written(cur):
            return False
        if not replace:
            raise _already_exists(row["bucket"], row["key"])
        await cur.execute(_REPLACE_OBJECT, row)
        if await _rows_written(cur):
            return True
    raise _replace_denied(row["bucket"], row["key"])


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    """A file's bytes, a megabyte at a time, each read in a worker thread."""
    fd = await anyio.to_thread.run_sync(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        while chunk := await anyio.to_thread.run_sync(os.read, fd, MIB):
            yield chunk
    finally:
        os.close(fd)


def _size_and_head(path: Path, head_bytes: int) -> tuple[int, bytes]:
    with path.open("rb") as file:
        return os.fstat(file.fileno()).st_size, file.read(head_bytes)


def _uploader(principal: Principal) -> str | None:
    sub = principal.claims.get("sub")
    return sub if isinstance(sub, str) and sub else None


def _object_row(
    principal: Principal,
    bucket: str,
    key: str,
    blob_id: uuid.UUID,
    size: int,
    etag: str | None,
    mime: str | None,
    via: str,
    at: datetime,
) -> dict[str, Any]:
    """The parameters of `_INSERT_OBJECT` and `_REPLACE_OBJECT`."""
    return {
        "bucket": bucket,
        "key": key,
        "size": size,
        "mime_type": mime,
        "etag": etag,
        "blob_id": blob_id,
        "uploaded_by": _uploader(principal),
        "via": via,
        "at": at,
    }


class StorageService:
    def __init__(
        self, settings: Settings, database: Database, project_secret: str, secret_box: SecretBox
    ) -> None:
        self.database = database
        self.settings = settings
        self.s3_keys = S3AccessKeys(database, secret_box)
        self.base_url = settings.base_url
        self.env_max_file_size = settings.storage.max_file_size
        storage_dir = settings.local_storage_dir
        #: Where resumable (TUS) uploads keep their bytes until they complete, on either backend.
        self.tus_dir = storage_dir / "tus"
        self.transforms = TransformCache(storage_dir / "transforms")
        self.blobs: BlobStore = (
            S3Blobs(settings.storage) if settings.storage.s3_bucket else LocalBlobs(storage_dir)
        )
        self.signer = UrlSigner(project_secret)

    # --- start ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Prepare the backend, remove what uploads that died left behind, remove queued garbage."""
        await self.blobs.start(self.database)
        await self.remove_stale_multipart_uploads()
        while await self.collect_garbage() == _GARBAGE_BATCH:
            pass

    async def remove_stale_multipart_uploads(self) -> int:
        """Remove the S3 multipart uploads no part has come to for `MULTIPART_EXPIRY`, and their parts (whose
        blobs are queued for the next collection); how many went."""
        async with self.database.as_owner() as cur:
            await cur.execute(
                "delete from storage.s3_multipart_uploads u where u.created_at < now() - %(age)s "
                "and not exists (select 1 from storage.s3_multipart_parts p where p.upload_id = u.upload_id "
                "and p.uploaded_at >= now() - %(age)s)",
                {"age": MULTIPART_EXPIRY},
            )
            return cur.rowcount

    async def stop(self) -> None:
        await self.blobs.stop()

    async def collect_garbage(self) -> int:
        """Remove blobs no row names any more (queued by a trigger); a row goes once its file is gone."""
        async with self.database.as_owner() as cur:
            await cur.execute(
                "select blob_id, bucket from storage.blob_garbage for update skip locked limit %s",
                (_GARBAGE_BATCH,),
            )
            rows = await cur.fetchall()
            blob_ids = [row["blob_id"] for row in rows]
            if blob_ids:
                await self.blobs.delete([(row["bucket"], row["blob_id"]) for row in rows])
                await cur.execute("delete from storage.blob_garbage where blob_id = any(%s)", (blob_ids,))
        return len(blob_ids)

    # --- configuration -------------------------------------------------------------------------------------

    async def _config_row(self) -> dict[str, Any] | None:
        async with self.database.as_owner() as cur:
            await cur.execute(
                "select id::text, max_file_size_mb, created_at, updated_at from storage.config limit 1"
            )
            return await cur.fetchone()

    def _effective_bytes(self, configured_mb: int | None) -> int:
        if configured_mb is not None:
            return configured_mb * MIB
        return self.env_max_file_size or DEFAULT_MAX_FILE_MB * MIB

    async def max_file_bytes(self) -> int:
        row = await self._config_row()
        return self._effective_bytes(row["max_file_size_mb"] if row else None)

    def _config_json(self, row: dict[str, Any] | None) -> dict[str, Any]:
        now = iso(datetime.now(UTC))
        limit = self._effective_bytes(row["max_file_size_mb"] if row else None)
        return {
            "id": row["id"] if row else "00000000-0000-0000-0000-000000000000",
            "maxFileSizeMb": max(1, round(limit / MIB)),
            "createdAt": iso(row["created_at"]) if row else now,
            "updatedAt": iso(row["updated_at"]) if row else now,
        }

    async def get_config(self, actor: Actor) -> dict[str, Any]:
        require_admin_actor(actor)
        return self._config_json(await self._config_row())

    async def update_config(self, actor: Actor, max_file_size_mb: int) -> dict[str, Any]:
        require_admin_actor(actor)
        async with self.database.as_owner() as cur:
            await cur.execute("select id from storage.config limit 1 for update")
            if await cur.fetchone():
                await cur.execute(
                    "update storage.config set max_file_size_mb = %s, updated_at = now()", (max_file_size_mb,)
                )
            else:
                await cur.execute(
                    "insert into storage.config (max_file_size_mb) values (%s)", (max_file_size_mb,)
                )
            await audit.record(
                cur, actor, "UPDATE_STORAGE_CONFIG", MODULE, {"updatedFields": ["maxFileSizeMb"]}
            )
            await cur.execute(
                "select id::text, max_file_size_mb, created_at, updated_at from storage.config limit 1"
            )
            row = await cur.fetchone()
        return self._config_json(row)

    # --- buckets (admin) -----------------------------------------------------------------------------------

    async def bucket_is_public(self, bucket: str) -> bool | None:
        """True or False for a bucket that exists, None for one that does not."""
        async with self.database.as_owner() as cur:
            await cur.execute("select public from storage.buckets where name = %s", (bucket,))
            row = await cur.fetchone()
        return None if row is None else bool(row["public"])

    async def object_count(self, bucket: str) -> int:
        """How many objects a bucket holds (0 for a bucket that does not exist)."""
        async with self.database.as_owner() as cur:
            await cur.execute("select count(*) as n from storage.objects where bucket = %s", (bucket,))
            row = await cur.fetchone()
        return int(row["n"]) if row else 0

    async def existing_objects(self, bucket: str, keys: Sequence[str]) -> int:
        """How many of `keys` name an object in `bucket` (0 for a bucket that does not exist)."""
        async with self.database.as_owner() as cur:
            await cur.execute(
                "select count(*) as n from storage.objects where bucket = %s and key = any(%s)",
                (bucket, list(keys)),
            )
            row = await cur.fetchone()
        return int(row["n"]) if row else 0

    async def list_buckets(self, actor: Actor) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        async with self.database.as_owner() as cur:
            await cur.execute(
                "select name, public, created_at from storage.buckets order by name limit 10000"
            )
            rows = await cur.fetchall()
        return [{"name": r["name"], "public": r["public"], "createdAt": iso(r["created_at"])} for r in rows]

    async def create_bucket(self, actor: Actor, bucket: str, is_public: bool) -> None:
        async with self.database.as_owner() as cur:
            await self.create_bucket_in(cur, actor, bucket, is_public)

    async def update_bucket(self, actor: Actor, bucket: str, is_public: bool) -> None:
        async with self.database.as_owner() as cur:
            await self.update_bucket_in(cur, actor, bucket, is_public)

    # --- buckets, inside a caller's transaction (the declarative project config, `config/`) ----------------

    @staticmethod
    def check_bucket_name(bucket: str) -> None:
        """Raise the 400 the bucket routes answer for a name they refuse."""
        names.bucket_name(bucket)

    async def buckets_in(self, cur: AsyncCursor[DictRow]) -> dict[str, bool]:
        """Every bucket's name and public flag, read in the caller's transaction."""
        await cur.execute("select name, public from storage.buckets order by name limit 10000")
        return {row["name"]: bool(row["public"]) for row in await cur.fetchall()}

    async def create_bucket_in(
        self, cur: AsyncCursor[DictRow], actor: Actor, bucket: str, is_public: bool
    ) -> None:
        """A new bucket and its audit entry, in the caller's transaction (409 for a name taken)."""
        require_admin_actor(actor)
        names.bucket_name(bucket)
        try:
            await cur.execute(
                "insert into storage.buckets (name, public) values (%s, %s)", (bucket, is_public)
            )
        except pg_errors.UniqueViolation:
            raise ApiError(
                409,
                "STORAGE_ALREADY_EXISTS",
                f'Bucket "{bucket}" already exists',
                "Choose another bucket name, or use the existing bucket.",
            ) from None
        await audit.record(cur, actor, "CREATE_BUCKET", MODULE, {"bucketName": bucket, "isPublic": is_public})

    async def update_bucket_in(
        self, cur: AsyncCursor[DictRow], actor: Actor, bucket: str, is_public: bool
    ) -> None:
        """A bucket made public or private, audited, in the caller's transaction (404 for none)."""
        require_admin_actor(actor)
        names.bucket_name(bucket)
        await cur.execute(
            "update storage.buckets set public = %s, updated_at = now() where name = %s", (is_public, bucket)
        )
        if cur.rowcount == 0:
            raise bucket_missing(bucket)
        await audit.record(cur, actor, "UPDATE_BUCKET", MODULE, {"bucketName": bucket, "isPublic": is_public})

    async def delete_empty_bucket_in(self, cur: AsyncCursor[DictRow], actor: Actor, bucket: str) -> None:
        """Delete a bucket that holds nothing (no object, no upload in progress), audited, in the caller's
        transaction; 409 for one that holds something. Nothing is left to remove from the blob store, so
        the deletion is whole inside the transaction, unlike `delete_bucket`'s.

        The bucket's row is locked first: an upload's object row takes a key-share lock on it (its foreign
        key), so an upload still committing is waited for and then counted, and one that starts later waits
        for this transaction, then finds no bucket."""
        require_admin_actor(actor)
        names.bucket_name(bucket)
        await cur.execute("select 1 from storage.buckets where name = %s for update", (bucket,))
        if await cur.fetchone() is None:
            raise bucket_missing(bucket)
        await cur.execute(
            "select (select count(*) from storage.objects where bucket = %(b)s) as objects, "
            "(select count(*) from storage.tus_uploads where bucket = %(b)s) "
            "+ (select count(*) from storage.s3_multipart_uploads where bucket = %(b)s) as uploads",
            {"b": bucket},
        )
        held = await cur.fetchone()
        assert held is not None
        if held["objects"] or held["uploads"]:
            raise ApiError(
                409,
                "STORAGE_BUCKET_NOT_EMPTY",
                f'Bucket "{bucket}" holds {held["objects"]} object(s) and {held["uploads"]} upload(s) in '
                "progress: only an empty bucket is deleted here.",
                f"Delete its objects first, or delete the bucket with everything in it by DELETE "
                f"/api/storage/buckets/{bucket}, or keep the bucket.",
            )
        await cur.execute("delete from storage.buckets where name = %s", (bucket,))
        await audit.record(cur, actor, "DELETE_BUCKET", MODULE, {"bucketName": bucket})

    async def delete_bucket(self, actor: Actor, bucket: str) -> None:
        """The bucket and every object in it (InsForge's behaviour): rows at once, bytes right after.

        An agent's call no person approved deletes only an empty bucket, and raises `HeldForApproval` for
        one with objects: the approval gate counted them before the call ran (`storage.tools`), but objects
        uploaded since would go unasked. The bucket's row is locked first, so no upload lands in it between
        this count and the delete (an upload's row checks its bucket's, and waits)."""
        require_admin_actor(actor)
        names.bucket_name(bucket)
        async with self.database.as_owner() as cur:
            if actor.is_unapproved_agent:
                # Two statements: the count must see what committed while the lock was awaited.
                await cur.execute("select from storage.buckets where name = %s for update", (bucket,))
                await cur.execute("select count(*) as n from storage.objects where bucket = %s", (bucket,))
                held = await cur.fetchone()
                if held is not None and held["n"]:
                    raise HeldForApproval(bucket_deletion_reason(bucket, held["n"]))
            await cur.execute("delete from storage.buckets where name = %s", (bucket,))
            if cur.rowcount == 0:
                raise not_found(
                    "Bucket not found or already empty", "List the buckets with GET /api/storage/buckets."
                )
            await audit.record(cur, actor, "DELETE_BUCKET", MODULE, {"bucketName": bucket})
        while await self.collect_garbage() == _GARBAGE_BATCH:
            pass

    # --- objects -------------------------------------------------------------------------------------------

    def object_url(self, bucket: str, key: str) -> str:
        return f"{self.base_url}/api/storage/buckets/{bucket}/objects/{quote(key, safe='')}"

    def object_json(self, stored: StoredObject) -> dict[str, Any]:
        return {
            "bucket": stored.bucket,
            "key": stored.key,
            "size": stored.size,
            "mimeType": stored.mime_type,
            "uploadedAt": iso(stored.uploaded_at),
            "url": self.object_url(stored.bucket, stored.key),
        }

    async def _upload_target(self, bucket: str, key: str | None) -> tuple[int, bool]:
        """For an upload, in one statement: the size limit, and whether an object is at `key` already (so
        that the upload may replace one, and leave its blob to collect); 404 when the bucket does not exist.
        An object that appears meanwhile is replaced all the same: its blob is queued, and goes at the next
        collection (the next replacement or deletion, or the next start)."""
        async with self.database.as_owner() as cur:
            await cur.execute(
                "select (select max_file_size_mb from storage.config limit 1) as max_file_size_mb, "
                "exists (select from storage.objects o where o.bucket = b.name and o.key = %s) as taken "
                "from storage.buckets b where b.name = %s",
                (key, bucket),
            )
            row = await cur.fetchone()
        if row is None:
            raise bucket_missing(bucket)
        return self._effective_bytes(row["max_file_size_mb"]), bool(row["taken"])

    async def _write_row(
        self,
        principal: Principal,
        row: dict[str, Any],
        *,
        replace: bool,
        finishing: uuid.UUID | None = None,
        rollback: bool = False,
    ) -> None:
        """`_write_object_row` in a transaction as the caller, its failures as the API's errors; `finishing`
        as in `commit_row`; with `rollback` nothing is kept (a probe)."""
        bucket, key = row["bucket"], row["key"]
        try:
            async with self.database.as_caller(principal, rollback=rollback) as cur:
                if finishing is not None:
                    await cur.execute("select storage.finish_tus_upload(%s)", (finishing,))
                await _write_object_row(cur, row, replace=replace)
        except pg_errors.InsufficientPrivilege:
            raise _denied(bucket, key) from None
        except pg_errors.ForeignKeyViolation:
            raise bucket_missing(bucket) from None
        except pg_errors.NoDataFound:
            raise upload_not_found() from None

    async def _probe_write(
        self, principal: Principal, bucket: str, key: str, *, replace: bool, mime: str | None = None
    ) -> None:
        """Refuse before any byte is received when the caller's policies forbid this write: the same write,
        of an empty object of the type the client claims (`mime`, when it is known: a policy may admit only
        images), rolled back."""
        row = _object_row(principal, bucket, key, uuid.uuid4(), 0, None, mime, "rest", datetime.now(UTC))
        await self._write_row(principal, row, replace=replace, rollback=True)

    async def _refuse_agent_replacing(self, actor: Actor, bucket: str, key: str) -> None:
        if actor.is_unapproved_agent and await self.existing_objects(bucket, [key]):
            raise agent_replace_refused(bucket, key)

    async def check_write(self, actor: Actor, bucket: str, key: str, *, replace: bool) -> None:
        """403 unless the caller's policies allow writing `key` (with `replace`, over an object there;
        without, 409 when one is there); nothing is written. An agent key may not replace an object here
        (`agent_replace_refused`): the upload this checks arrives later, in requests no approval holds."""
        if replace:
            await self._refuse_agent_replacing(actor, bucket, key)
        if not actor.is_admin:
            await self._probe_write(actor.principal, bucket, key, replace=replace)

    async def put_object(
        self,
        actor: Actor,
        bucket: str,
        key: str | None,
        body: AsyncIterator[bytes],
        content_type: str | None,
        *,
        filename: str = "file",
        raw: bool = False,
        via: str = "rest",
        verify: Callable[[], None] | None = None,
        limit: int | None = None,
        replace: bool = True,
    ) -> dict[str, Any]:
        """Stream `body` (a multipart form with a `file` field, or, when not a form or when `raw`, the bytes
        themselves) into the object at `key`, or at a generated key when `key` is None. Created, or (with
        `replace`, as InsForge's PUT and S3's PutObject) replaced, atomically with its row; `verify` runs
        once every byte is in, before anything is committed. An unknown bucket, or a write the caller's
        policies forbid, is refused before the file's bytes are read, with the answer the commit would give
        (else anyone could have the server receive and store gigabytes only to throw them away); the commit
        still decides, as policies and objects may change while the bytes stream."""
        names.bucket_name(bucket)
        if key is not None:
            names.object_key(key)
        principal = actor.principal
        configured_limit, taken = await self._upload_target(bucket, key)
        if taken and replace and actor.is_unapproved_agent:
            assert key is not None
            raise agent_replace_refused(bucket, key)
        if limit is None:
            limit = configured_limit
        if raw:
            received, chunks = ReceivedFile(filename, content_type), body
        else:
            received, chunks = await open_upload(body, content_type, filename)
        if key is None:
            key = names.generated_key(received.filename)
        if not principal.is_admin:
            # Once the form's part headers are read, the file's name (a generated key is made from it) and
            # claimed type are known: the caller's policies decide on them then, before the file is read on
            # (at most the network chunk that brought those headers has arrived) or any of it is stored.
            await self._probe_write(principal, bucket, key, replace=replace, mime=received.claimed_type)
        final_key = key
        s3 = via == "s3"  # S3's PutObject: its ETag is the MD5 of the bytes

        async def commit(blob_id: uuid.UUID, meter: Meter, mime: str) -> StoredObject:
            etag = meter.md5 if s3 else version_etag(blob_id)
            return await self.commit_row(
                actor, bucket, final_key, blob_id, meter.size, etag, mime, via, replace=replace
            )

        stored = await self.store_blob(
            bucket, chunks, limit, received.claimed_type, commit, verify=verify, md5=s3, replacing=taken
        )
        return self.object_json(stored)

    async def store_blob(
        self,
        bucket: str,
        chunks: AsyncIterator[bytes],
        limit: int,
        claimed_type: str | None,
        commit: Callable[[uuid.UUID, Meter, str], Awaitable[T]],
        *,
        verify: Callable[[], None] | None = None,
        md5: bool = False,
        replacing: bool = True,
    ) -> T:
        """Write `chunks` as a new blob (metered against `limit`), then `commit` the row that names it; on
        any failure before the commit, nothing is left. Blobs the commit replaced are then removed (unless
        `replacing` is False: the key was free, so there is none to look for).
        `md5=True` hashes the bytes on the way (`meter.md5`), for the S3 writes whose ETag is their MD5."""
        meter = Meter(limit, content_types.SNIFF_BYTES, md5=md5)
        upload = await self.blobs.begin(bucket)

        async def write() -> None:
            try:
                safe_claim = None if content_types.is_unsafe(claimed_type) else claimed_type
                await upload.write_all(meter.metered(chunks), safe_claim)
            except Exception as exc:
                if isinstance(exc, TooLarge) or meter.size > limit:
                    raise ApiError(
                        413,
                        "STORAGE_INVALID_PARAMETER",
                        f"File too large. Maximum upload size is {max(1, round(limit / MIB))} MB.",
                        TOO_LARGE,
                    ) from None
                raise
            if verify is not None:
                verify()

        return await self._complete(upload, meter, claimed_type, commit, write, replacing)

    async def store_file(
        self,
        bucket: str,
        source: Path,
        locked_fd: int,
        claimed_type: str | None,
        commit: Callable[[uuid.UUID, Meter, str], Awaitable[T]],
    ) -> T:
        """`store_blob` for bytes already complete in the file `source` (a finished TUS upload, which the
        caller holds open and locked as `locked_fd`, and removes after): linked on the local disk, streamed
        to an S3 store."""
        upload = await self.blobs.adopt(bucket, source, locked_fd)
        if upload is None:
            size = (await anyio.to_thread.run_sync(source.stat)).st_size
            return await self.store_blob(bucket, _file_chunks(source), size, claimed_type, commit)
        try:
            size, head = await anyio.to_thread.run_sync(_size_and_head, source, content_types.SNIFF_BYTES)
        except BaseException:
            await upload.close(committed=False)
            raise
        return await self._complete(upload, Meter.of_file(size, head), claimed_type, commit, None, True)

    async def _complete(
        self,
        upload: Upload,
        meter: Meter,
        claimed_type: str | None,
        commit: Callable[[uuid.UUID, Meter, str], Awaitable[T]],
        write: Callable[[], Awaitable[None]] | None,
        replacing: bool,
    ) -> T:
        """`write` the upload's bytes (unless they are there), make them durable, and commit its row; on any
        failure before the commit the upload is removed, after it the blobs it replaced."""
        committed = False
        try:
            if write is not None:
                await write()
            mime = content_types.detect(meter.head, claimed_type)
            await upload.publish()
            result = await commit(upload.blob_id, meter, mime)
            committed = True
        finally:
            await upload.close(committed=committed)
        if replacing:
            await self.collect_garbage()
        return result

    async def commit_row(
        self,
        actor: Actor,
        bucket: str,
        key: str,
        blob_id: uuid.UUID,
        size: int,
        etag: str | None,
        mime: str,
        via: str,
        *,
        replace: bool,
        finishing: uuid.UUID | None = None,
    ) -> StoredObject:
        """Write the object's row as the caller: a new object with the INSERT policies alone; one already at
        `key` replaced (with `replace`, needing UPDATE and SELECT policies that cover it: 403 otherwise) or
        not (409). With `finishing`, the TUS upload this write makes into its object is marked finished in
        the same transaction (see `tus.py`): 404 when it is not there to finish (finished already, abandoned,
        or not the caller's). Whatever is refused, nothing is written. An agent key replaces an object only
        in a call a person approved (`agent_replace_refused` otherwise): every upload path ends here, so
        none replaces one past the approval."""
        principal = actor.principal
        now = datetime.now(UTC)
        row = _object_row(principal, bucket, key, blob_id, size, etag, mime, via, now)
        agent_alone = replace and actor.is_unapproved_agent
        try:
            await self._write_row(principal, row, replace=replace and not agent_alone, finishing=finishing)
        except ApiError as exc:
            if agent_alone and exc.code == "STORAGE_ALREADY_EXISTS":
                raise agent_replace_refused(bucket, key) from None
            raise
        if principal.is_admin:
            details = {"bucket": bucket, "key": key, "size": size, "via": via}
            await audit.record(self.database, actor, "UPLOAD_OBJECT", MODULE, details)
        return StoredObject(bucket, key, size, mime, etag, blob_id, now)

    async def visible_object(
        self, principal: Principal | None, bucket: str, key: str, *, refused: ApiError | None = None
    ) -> StoredObject:
        """The object as the caller may see it: a public bucket's to anyone, even without a credential
        (`principal` None), else as RLS decides. 404 when missing or not visible (a caller learns nothing of
        objects a policy hides). A private bucket with no caller answers `refused`, the refusal of the
        credential presented, if one was; so does a bucket that does not exist, so that a caller with no
        credential cannot tell which private buckets exist (InsForge's `verifyUser` answers first too)."""
        names.bucket_name(bucket)
        names.object_key(key)
        is_public = await self.bucket_is_public(bucket)
        if not is_public and principal is None:
            # (InsForge's `verifyUser`, which guards a private bucket's downloads.)
            raise refused or no_token(
                "A private bucket's objects need a credential: send the anon key, an access token "
                "or the API key, or use a signed URL."
            )
        if is_public is None:
            raise bucket_missing(bucket)
        reader = SYSTEM_PRINCIPAL if is_public or principal is None else principal
        async with self.database.as_caller(reader, read_only=True) as cur:
            await cur.execute(
                f"select {_OBJECT_COLUMNS} from storage.objects where bucket = %s and key = %s", (bucket, key)
            )
            row = await cur.fetchone()
        if row is None:
            raise not_found("Object not found", LIST_OBJECTS)
        return StoredObject.of(row)

    async def object_by_signature(self, bucket: str, key: str, expires: str, signature: str) -> StoredObject:
        """The object a signed URL names, when its signature holds and it has not expired (403 otherwise)."""
        problem = self.signer.verify(bucket, key, expires, signature)
        if problem is not None:
            raise ApiError(403, "STORAGE_PERMISSION_DENIED", problem, "Ask for a new signed URL.")
        return await self.visible_object(SYSTEM_PRINCIPAL, bucket, key)

    async def transformed(self, stored: StoredObject, transform: Transform) -> tuple[bytes, str, str]:
        """An image object transformed (cached per object version): bytes, content type, ETag."""
        if content_types.essence(stored.mime_type) not in TRANSFORMABLE:
            raise ApiError(
                415,
                "STORAGE_INVALID_FILE_TYPE",
                "Only JPEG, PNG, WebP, GIF, AVIF, BMP and TIFF images can be transformed.",
                AS_STORED,
            )
        if stored.size > MAX_SOURCE_BYTES:
            raise ApiError(
                413, "STORAGE_INVALID_PARAMETER", "The image is too large to transform.", AS_STORED
            )

        async def load() -> bytes:
            return b"".join([chunk async for chunk in self.read(stored, 0, stored.size)])

        key = transform.key(str(stored.blob_id))
        body, content_type = await self.transforms.rendered(
            key, load, transform, content_types.essence(stored.mime_type)
        )
        return body, content_type, f'"{stored.etag}-{key[:12]}"'

    def read(self, stored: StoredObject, start: int, end: int) -> AsyncIterator[bytes]:
        return self.blobs.read(stored.bucket, stored.blob_id, start, end)

    async def list_objects(
        self,
        principal: Principal,
        bucket: str,
        *,
        prefix: str | None,
        search: str | None,
        limit: int,
        offset: int,
    ) -> dict[str, Any]:
        names.bucket_name(bucket)
        if await self.bucket_is_public(bucket) is None:
            raise bucket_missing(bucket)
        conditions = ["bucket = %s"]
        params: list[Any] = [bucket]
        for pattern in (
            f"{_like(prefix)}%" if prefix else None,
            f"%{_like(search.strip())}%" if search and search.strip() else None,
        ):
            if pattern is not None:
                conditions.append("key like %s")
                params.append(pattern)
        where = " and ".join(conditions)
        async with self.database.as_caller(principal, read_only=True) as cur:
            await cur.execute(
                f"select {_OBJECT_COLUMNS}, count(*) over () as total from storage.objects where {where} "
                "order by key limit %s offset %s",
                [*params, limit, offset],
            )
            rows = await cur.fetchall()
            total = int(rows[0]["total"]) if rows else None
            if total is None and offset > 0:
                await cur.execute(f"select count(*) as total from storage.objects where {where}", params)
                counted = await cur.fetchone()
                total = int(counted["total"]) if counted else 0
        return {
            "data": [self.object_json(StoredObject.of(row)) for row in rows],
            "pagination": {"offset": offset, "limit": limit, "total": total or 0},
            "nextActions": (
                "You can use PUT /api/storage/buckets/:bucketName/objects/:objectKey to create or replace "
                "a specific key, POST /api/storage/buckets/:bucketName/objects to upload with an "
                "auto-generated key, and GET /api/storage/buckets/:bucketName/objects/:objectKey to "
                "download an object."
            ),
        }

    async def delete_objects(self, actor: Actor, bucket: str, keys: Sequence[str]) -> list[dict[str, Any]]:
        """Delete what the caller's policies allow; one outcome per key (`deleted` or `notFound`).

        An agent's call no person approved that would delete any object is rolled back and raises
        `HeldForApproval`: the approval gate looked for the keys before the call ran (`storage.tools`), and
        found none, but an object uploaded since would go unasked."""
        names.bucket_name(bucket)
        unique = list(dict.fromkeys(keys))
        for key in unique:
            names.object_key(key)
        if await self.bucket_is_public(bucket) is None:
            raise bucket_missing(bucket)
        try:
            async with self.database.as_caller(actor.principal) as cur:
                await cur.execute(
                    "delete from storage.objects where bucket = %s and key = any(%s) returning key",
                    (bucket, unique),
                )
                deleted = {row["key"] for row in await cur.fetchall()}
                if deleted and actor.is_unapproved_agent:
                    raise HeldForApproval(objects_deletion_reason(bucket, len(deleted)))
        except pg_errors.InsufficientPrivilege:
            raise _denied(bucket, unique[0], "delete") from None
        if actor.is_admin and deleted:
            await audit.record(
                self.database,
                actor,
                "DELETE_OBJECTS",
                MODULE,
                {"bucket": bucket, "keys": sorted(deleted)[:100]},
            )
        await self.collect_garbage()
        return [{"key": key, "status": "deleted" if key in deleted else "notFound"} for key in unique]

    # --- strategies and signed URLs ------------------------------------------------------------------------

    async def upload_strategy(
        self, actor: Actor, bucket: str, key: str, content_type: str | None
    ) -> dict[str, Any]:
        """How to upload to `key`, after checking the caller may write there: directly to this server (the
        PUT route; local disk and S3 proxy mode), or a presigned POST to the S3 store, confirmed after."""
        names.bucket_name(bucket)
        names.object_key(key)
        if await self.bucket_is_public(bucket) is None:
            raise bucket_missing(bucket)
        if not actor.is_admin:
            await self._probe_write(actor.principal, bucket, key, replace=True)
        if isinstance(self.blobs, S3Blobs) and self.blobs.presigned:
            # The bytes go straight to the store, where no approval can hold them (a direct upload's PUT is
            # held instead).
            await self._refuse_agent_replacing(actor, bucket, key)
            blob_id = uuid.uuid4()
            safe_type = content_type if content_type and not content_types.is_unsafe(content_type) else None
            url, fields, expires = self.blobs.presigned_post(
                bucket, blob_id, await self.max_file_bytes(), safe_type or content_types.OCTET_STREAM
            )
            await self.blobs.journal(
                bucket, blob_id, key=key, uploaded_by=_uploader(actor.principal), expires_at=expires
            )
            return {
                "method": "presigned",
                "uploadUrl": url,
                "fields": fields,
                "key": key,
                "confirmRequired": True,
                "confirmUrl": f"/api/storage/buckets/{bucket}/objects/{quote(key, safe='')}/confirm-upload",
                "expiresAt": iso(expires),
            }
        return {
            "method": "direct",
            "uploadUrl": self.object_url(bucket, key),
            "key": key,
            "confirmRequired": False,
        }

    async def confirm_upload(
        self, actor: Actor, bucket: str, key: str, claimed_type: str | None = None
    ) -> dict[str, Any]:
        """After a presigned upload: the blob the caller was given for this key, checked (there, within the
        size limit, its type sniffed), becomes the object, as the caller's policies allow. Its type is decided
        as for a direct upload, from its first bytes and else the type the client says (the SDK sends the
        file's): without the claim, text, JSON or CSV would all be stored as application/octet-stream. After
        a direct upload the object is already there: its metadata, as the caller may see it."""
        names.bucket_name(bucket)
        names.object_key(key)
        if not isinstance(self.blobs, S3Blobs):
            return self.object_json(await self.visible_object(actor.principal, bucket, key))
        async with self.database.as_owner() as cur:
            await cur.execute(
                "select blob_id from storage.pending_blobs where bucket = %s and key = %s "
                "and uploaded_by is not distinct from %s and expires_at > now() "
                "order by started_at desc limit 1",
                (bucket, key, _uploader(actor.principal)),
            )
            row = await cur.fetchone()
        if row is None:
            if not self.blobs.presigned:
                return self.object_json(await self.visible_object(actor.principal, bucket, key))
            raise not_found(
                f'Upload not found for key "{key}" in bucket "{bucket}"', "Ask for an upload strategy."
            )
        blob_id = row["blob_id"]
        head = await self.blobs.head(bucket, blob_id)
        if head is None:
            raise not_found(
                f'Upload not found for key "{key}" in bucket "{bucket}"', "Upload the file first."
            )
        size, etag = head
        limit = await self.max_file_bytes()
        if size > limit:
            await self.blobs.delete([(bucket, blob_id)])
            await self.blobs.forget_pending([blob_id])
            raise ApiError(
                413,
                "STORAGE_INVALID_PARAMETER",
                f"File size exceeds the configured maximum upload size of {round(limit / MIB)} MB",
                TOO_LARGE,
            )
        first = b"".join([chunk async for chunk in self.blobs.read(bucket, blob_id, 0, min(size, 4096))])
        mime = content_types.detect(first, claimed_type)
        stored = await self.commit_row(actor, bucket, key, blob_id, size, etag, mime, "rest", replace=True)
        await self.blobs.forget_pending([blob_id])
        await self.collect_garbage()
        return self.object_json(stored)

    async def download_redirect(self, stored: StoredObject, seconds: int) -> str | None:
        """In S3 presigned mode, the store's own URL for a download (not for active types, which this
        server serves itself as attachments); None to stream it from here."""
        if content_types.is_unsafe(stored.mime_type):
            return None
        return await self.blobs.presigned_get(stored.bucket, stored.blob_id, seconds)

    async def download_strategy(
        self,
        principal: Principal | None,
        bucket: str,
        key: str,
        expires_in: float | None,
        *,
        refused: ApiError | None = None,
    ) -> dict[str, Any]:
        """A URL to download the object with, checked against the caller's policies first: a presigned URL
        of the S3 store (presigned mode), else this server's URL: plain for a public bucket (valid for as
        long as the bucket stays public), signed and expiring for a private one."""
        stored = await self.visible_object(principal, bucket, key, refused=refused)
        public = bool(await self.bucket_is_public(bucket))
        seconds = MAX_SECONDS if public else clamp_expiry(expires_in)
        presigned = await self.download_redirect(stored, seconds)
        if presigned is not None:
            expires_at = iso(datetime.now(UTC) + timedelta(seconds=seconds))
            return {"method": "presigned", "url": presigned, "expiresAt": expires_at}
        url = self.object_url(stored.bucket, stored.key)
        if public:
            return {"method": "direct", "url": url}
        signed = self.signer.sign(stored.bucket, stored.key, seconds)
        expires_at = iso(datetime.fromtimestamp(signed.expires_at, UTC))
        return {"method": "direct", "url": f"{url}?{signed.query}", "expiresAt": expires_at}

    @property
    def backend(self) -> str:
        return self.blobs.kind


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
