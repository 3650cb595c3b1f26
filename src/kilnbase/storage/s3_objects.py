"""What the S3 protocol endpoint does with buckets and objects, on top of `StorageService`: S3's listing
(prefix, delimiter, continuation in binary key order), copies, and multipart uploads whose parts are blobs
of their own until the upload completes (the object then appears at once, whole) or is aborted.

The endpoint's caller is an S3 access key, which acts as the project's admin (InsForge's rule: the S3
protocol is a machine credential; `uploaded_via` says `s3`). PutObject, CopyObject and CompleteMultipartUpload
replace an object at their key, as S3 does.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import errors as pg_errors

from kilnbase.identity.actor import Actor
from kilnbase.storage.blob_store import Meter
from kilnbase.storage.service import StorageService, StoredObject


class S3Error(Exception):
    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def no_such_bucket(bucket: str) -> S3Error:
    return S3Error("NoSuchBucket", f"The specified bucket does not exist: {bucket}", 404)


@dataclass(frozen=True)
class Listing:
    objects: list[dict[str, Any]]
    prefixes: list[str]
    truncated: bool
    next_after: str | None


@dataclass(frozen=True)
class Part:
    number: int
    size: int
    etag: str
    blob_id: uuid.UUID
    uploaded_at: datetime


class S3Objects:
    def __init__(self, storage: StorageService, max_object_size: int) -> None:
        self.storage = storage
        self.database = storage.database
        self.max_object_size = max_object_size

    async def require_bucket(self, bucket: str) -> None:
        if await self.storage.bucket_is_public(bucket) is None:
            raise no_such_bucket(bucket)

    async def bucket_is_empty(self, bucket: str) -> bool:
        async with self.database.as_owner() as cur:
            await cur.execute(
                "select not exists (select 1 from storage.objects where bucket = %s) as empty", (bucket,)
            )
            row = await cur.fetchone()
        return bool(row and row["empty"])

    async def list_objects(
        self, bucket: str, *, prefix: str, delimiter: str, after: str, max_keys: int
    ) -> Listing:
        """Keys and common prefixes after `after`, in binary order, at most `max_keys` entries together."""
        await self.require_bucket(bucket)
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        params: dict[str, Any] = {
            "bucket": bucket,
            "like": like,
            "plen": len(prefix),
            "delim": delimiter,
            "after": after,
            "limit": max_keys + 1,
        }
        sql = """
            with listed as (
                select key, size, etag, uploaded_at,
                    case when %(delim)s <> '' and strpos(substr(key, %(plen)s + 1), %(delim)s) > 0
                        then left(key, %(plen)s + strpos(substr(key, %(plen)s + 1), %(delim)s)
                                       + length(%(delim)s) - 1)
                    end as common
                from storage.objects
                where bucket = %(bucket)s and key like %(like)s and key collate "C" > %(after)s
            )
            select coalesce(common, key) as entry, common is not null as is_prefix,
                   max(size) as size, max(etag) as etag, max(uploaded_at) as uploaded_at
            from listed
            group by 1, 2
            order by coalesce(common, key) collate "C"
            limit %(limit)s
        """
        async with self.database.as_owner() as cur:
            await cur.execute(sql, params)
            rows = await cur.fetchall()
        truncated = len(rows) > max_keys
        rows = rows[:max_keys]
        objects = [r for r in rows if not r["is_prefix"]]
        prefixes = [r["entry"] for r in rows if r["is_prefix"]]
        next_after = None
        if truncated and rows:
            last = rows[-1]
            # After a common prefix, skip every key under it: the next key in binary order past them all.
            next_after = last["entry"] + "\U0010ffff" if last["is_prefix"] else last["entry"]
        return Listing(objects, prefixes, truncated, next_after)

    async def head(self, actor: Actor, bucket: str, key: str) -> StoredObject:
        await self.require_bucket(bucket)
        return await self.storage.visible_object(actor.principal, bucket, key)

    async def copy(
        self, actor: Actor, source_bucket: str, source_key: str, bucket: str, key: str
    ) -> StoredObject:
        source = await self.head(actor, source_bucket, source_key)
        await self.require_bucket(bucket)

        async def commit(blob_id: uuid.UUID, meter: Meter, mime: str) -> StoredObject:
            mime = source.mime_type or mime
            return await self.storage.commit_row(
                actor, bucket, key, blob_id, meter.size, meter.md5, mime, "s3", replace=True
            )

        chunks = self.storage.read(source, 0, source.size)
        return await self.storage.store_blob(
            bucket, chunks, self.max_object_size, source.mime_type, commit, md5=True
        )

    # --- multipart -----------------------------------------------------------------------------------------

    async def create_upload(self, bucket: str, key: str, content_type: str | None, access_key_id: str) -> str:
        await self.require_bucket(bucket)
        if await self.storage.remove_stale_multipart_uploads():  # (a server up for weeks keeps a week's)
            await self.storage.collect_garbage()
        async with self.database.as_owner() as cur:
            await cur.execute(
                "insert into storage.s3_multipart_uploads (bucket, key, content_type, access_key_id) "
                "values (%s, %s, %s, %s) returning upload_id::text",
                (bucket, key, content_type, access_key_id),
            )
            row = await cur.fetchone()
        assert row is not None
        return str(row["upload_id"])

    async def _upload(self, bucket: str, key: str, upload_id: str) -> dict[str, Any]:
        try:
            parsed = uuid.UUID(upload_id)
        except ValueError:
            raise S3Error("NoSuchUpload", "The specified upload does not exist.", 404) from None
        async with self.database.as_owner() as cur:
            await cur.execute(
                "select upload_id, content_type from storage.s3_multipart_uploads "
                "where upload_id = %s and bucket = %s and key = %s",
                (parsed, bucket, key),
            )
            row = await cur.fetchone()
        if row is None:
            raise S3Error("NoSuchUpload", "The specified upload does not exist.", 404)
        return row

    async def upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, chunks: AsyncIterator[bytes], verify: Any
    ) -> str:
        upload = await self._upload(bucket, key, upload_id)
        if not 1 <= number <= 10000:
            raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000.", 400)

        async def commit(blob_id: uuid.UUID, meter: Meter, _mime: str) -> str:
            try:
                async with self.database.as_owner() as cur:
                    await cur.execute(
                        "insert into storage.s3_multipart_parts "
                        "(upload_id, part_number, blob_id, bucket, size, etag) "
                        "values (%s, %s, %s, %s, %s, %s) "
                        "on conflict (upload_id, part_number) do update set blob_id = excluded.blob_id, "
                        "size = excluded.size, etag = excluded.etag, uploaded_at = now()",
                        (upload["upload_id"], number, blob_id, bucket, meter.size, meter.md5),
                    )
            except pg_errors.ForeignKeyViolation:
                raise S3Error("NoSuchUpload", "The specified upload does not exist.", 404) from None
            return meter.md5

        return await self.storage.store_blob(
            bucket, chunks, self.max_object_size, None, commit, verify=verify, md5=True
        )

    async def parts(self, bucket: str, key: str, upload_id: str) -> list[Part]:
        upload = await self._upload(bucket, key, upload_id)
        async with self.database.as_owner() as cur:
            await cur.execute(
                "select part_number, size, etag, blob_id, uploaded_at from storage.s3_multipart_parts "
                "where upload_id = %s order by part_number",
                (upload["upload_id"],),
            )
            rows = await cur.fetchall()
        return [
            Part(r["part_number"], int(r["size"]), r["etag"], r["blob_id"], r["uploaded_at"]) for r in rows
        ]

    async def complete(
        self, actor: Actor, bucket: str, key: str, upload_id: str, chosen: list[tuple[int, str]]
    ) -> StoredObject:
        """The chosen parts, in order, become the object (written as one new blob, then committed); the
        upload and its parts go."""
        upload = await self._upload(bucket, key, upload_id)
        stored_parts = {part.number: part for part in await self.parts(bucket, key, upload_id)}
        if not chosen:
            raise S3Error("MalformedXML", "The XML you provided was not well-formed.", 400)
        numbers = [number for number, _etag in chosen]
        if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
            raise S3Error("InvalidPartOrder", "The list of parts was not in ascending order.", 400)
        selected = []
        for number, etag in chosen:
            part = stored_parts.get(number)
            if part is None or etag.strip('"') != part.etag:
                raise S3Error(
                    "InvalidPart", f"Part {number} was not uploaded, or its ETag does not match.", 400
                )
            selected.append(part)
        for part in selected[:-1]:
            if part.size < 5 * 1024 * 1024:
                raise S3Error("EntityTooSmall", "Every part but the last must be at least 5 MiB.", 400)
        multipart_etag = (
            hashlib.md5(b"".join(bytes.fromhex(p.etag) for p in selected), usedforsecurity=False).hexdigest()
            + f"-{len(selected)}"
        )

        async def joined() -> AsyncIterator[bytes]:
            for part in selected:
                async for chunk in self.storage.blobs.read(bucket, part.blob_id, 0, part.size):
                    yield chunk

        async def commit(blob_id: uuid.UUID, meter: Meter, mime: str) -> StoredObject:
            return await self.storage.commit_row(
                actor,
                bucket,
                key,
                blob_id,
                meter.size,
                multipart_etag,
                upload["content_type"] or mime,
                "s3",
                replace=True,
            )

        stored = await self.storage.store_blob(
            bucket, joined(), self.max_object_size, upload["content_type"], commit
        )
        await self.abort(bucket, key, upload_id)
        return stored

    async def abort(self, bucket: str, key: str, upload_id: str) -> None:
        upload = await self._upload(bucket, key, upload_id)
        async with self.database.as_owner() as cur:
            await cur.execute(
                "delete from storage.s3_multipart_uploads where upload_id = %s", (upload["upload_id"],)
            )
        await self.storage.collect_garbage()
