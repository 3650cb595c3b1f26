"""Object bytes in an S3-compatible store (AWS S3, R2, MinIO, SeaweedFS...), through obstore's `S3Store`.

A blob is `<prefix><bucket>/<blob id>`. An S3 PUT (or a completed multipart upload) appears whole or not at
all, so there is no rename step; what needs care is a blob that was written but never named by a row (the
process died between the PUT and the commit, or a presigned upload was never confirmed). Every blob is
therefore journalled in `storage.pending_blobs` before its first byte is sent, with the advisory-lock id
this process holds for as long as it lives, and un-journalled when its row commits. At start, a journalled
blob whose process no longer holds its lock (or whose presigned upload expired) is deleted from the store
unless a row names it.

Presigned mode hands clients URLs of the store itself: a SigV4 POST policy to upload (what the SDK's
`upload` posts a form to), presigned GETs to download. Proxy mode (`S3_USE_PRESIGNED_URLS=false`) streams
every byte through Kilnbase instead.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import obstore
from obstore.store import S3Store
from psycopg import AsyncConnection

from kilnbase.config import StorageSettings
from kilnbase.db.session import Database

log = logging.getLogger("kilnbase.storage")

READ_CHUNK = 512 * 1024
#: Part size of multipart uploads to the store, and how many parts are in flight: bounds memory per upload.
PART_SIZE = 8 * 1024 * 1024
PART_CONCURRENCY = 4


def _instance_id() -> int:
    """A random signed 63-bit advisory-lock key for this process."""
    return secrets.randbits(62)


class S3Upload:
    def __init__(self, blobs: S3Blobs, bucket: str, blob_id: uuid.UUID) -> None:
        self.blobs = blobs
        self.bucket = bucket
        self.blob_id = blob_id
        self.written = False

    async def write_all(self, chunks: AsyncIterator[bytes], content_type: str | None) -> None:
        attributes: dict[str, str] = {"Content-Type": content_type} if content_type else {}
        self.written = True
        await obstore.put_async(
            self.blobs.store,
            self.blobs.path(self.bucket, self.blob_id),
            chunks,
            attributes=attributes,
            chunk_size=PART_SIZE,
            max_concurrency=PART_CONCURRENCY,
        )

    async def publish(self) -> None:
        return None

    async def close(self, *, committed: bool) -> None:
        if not committed and self.written:
            await self.blobs.delete([(self.bucket, self.blob_id)])
        await self.blobs.forget_pending([self.blob_id])


class S3Blobs:
    kind = "s3"

    def __init__(self, settings: StorageSettings) -> None:
        assert settings.s3_bucket
        self.settings = settings
        self.bucket_name = settings.s3_bucket
        self.presigned = settings.s3_use_presigned_urls
        self.prefix = settings.s3_prefix.strip("/") + "/" if settings.s3_prefix.strip("/") else ""
        config: dict[str, Any] = {"region": settings.s3_region}
        if settings.s3_endpoint_url:
            config["endpoint"] = settings.s3_endpoint_url
        if settings.s3_access_key_id and settings.s3_secret_access_key:
            config["access_key_id"] = settings.s3_access_key_id
            config["secret_access_key"] = settings.s3_secret_access_key
        config["virtual_hosted_style_request"] = not settings.s3_force_path_style
        self.store = S3Store(
            self.bucket_name,
            client_options={"allow_http": True},
            **config,
        )
        self.instance = _instance_id()
        self._database: Database | None = None
        self._lock: AsyncConnection[Any] | None = None

    def path(self, bucket: str, blob_id: uuid.UUID | str) -> str:
        return f"{self.prefix}{bucket}/{blob_id}"

    # --- lifecycle -----------------------------------------------------------------------------------------

    async def start(self, database: Database) -> None:
        """Hold this process's advisory lock (on a connection of its own), then sweep dead uploads."""
        self._database = database
        conninfo = database.owner_pool.conninfo
        assert isinstance(conninfo, str)
        self._lock = await AsyncConnection.connect(conninfo, autocommit=True)
        await self._lock.execute("select pg_advisory_lock(%s)", (self.instance,))
        await self.sweep()

    async def stop(self) -> None:
        if self._lock is not None:
            await self._lock.close()
            self._lock = None

    def _db(self) -> Database:
        assert self._database is not None, "S3Blobs.start was not called"
        return self._database

    async def sweep(self) -> int:
        """Delete journalled blobs whose writer died or whose presigned upload expired unconfirmed (unless a
        row names them), and their journal rows; the number removed."""
        assert self._lock is not None
        async with self._db().as_owner() as cur:
            await cur.execute(
                "select p.blob_id, p.bucket, p.instance, p.expires_at, "
                "(exists (select 1 from storage.objects o where o.blob_id = p.blob_id) or exists "
                "(select 1 from storage.s3_multipart_parts m where m.blob_id = p.blob_id)) as committed "
                "from storage.pending_blobs p where p.instance is distinct from %s limit 10000",
                (self.instance,),
            )
            rows = await cur.fetchall()
        now = datetime.now(UTC)
        alive: dict[int, bool] = {}
        dead = []
        for row in rows:
            instance = row["instance"]
            if instance is None:
                if row["expires_at"] is not None and row["expires_at"] > now and not row["committed"]:
                    continue
            else:
                if instance not in alive:
                    cur2 = await self._lock.execute("select pg_try_advisory_lock(%s)", (instance,))
                    got = (await cur2.fetchone() or (False,))[0]
                    if got:
                        await self._lock.execute("select pg_advisory_unlock(%s)", (instance,))
                    alive[instance] = not got
                if alive[instance]:
                    continue
            dead.append(row)
        orphans = [(row["bucket"], row["blob_id"]) for row in dead if not row["committed"]]
        if orphans:
            await self.delete(orphans)
        await self.forget_pending([row["blob_id"] for row in dead])
        return len(dead)

    async def journal(
        self,
        bucket: str,
        blob_id: uuid.UUID,
        *,
        key: str | None = None,
        uploaded_by: str | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        instance = None if expires_at is not None else self.instance
        async with self._db().as_owner() as cur:
            await cur.execute(
                "insert into storage.pending_blobs (blob_id, bucket, key, instance, uploaded_by, expires_at) "
                "values (%s, %s, %s, %s, %s, %s)",
                (blob_id, bucket, key, instance, uploaded_by, expires_at),
            )

    async def forget_pending(self, blob_ids: list[uuid.UUID]) -> None:
        if blob_ids:
            async with self._db().as_owner() as cur:
                await cur.execute("delete from storage.pending_blobs where blob_id = any(%s)", (blob_ids,))

    # --- bytes ---------------------------------------------------------------------------------------------

    async def begin(self, bucket: str) -> S3Upload:
        blob_id = uuid.uuid4()
        await self.journal(bucket, blob_id)
        return S3Upload(self, bucket, blob_id)

    async def adopt(self, bucket: str, source: Path, locked_fd: int) -> None:
        """A local file cannot become an object of the store without being sent: the caller streams it."""
        return None

    async def read(self, bucket: str, blob_id: uuid.UUID, start: int, end: int) -> AsyncIterator[bytes]:
        if end <= start:
            return
        result = await obstore.get_async(
            self.store, self.path(bucket, blob_id), options={"range": (start, end)}
        )
        async for chunk in result.stream(min_chunk_size=READ_CHUNK):
            yield bytes(chunk)

    async def head(self, bucket: str, blob_id: uuid.UUID) -> tuple[int, str | None] | None:
        """(size, etag) of a blob, or None when it is not there."""
        try:
            meta = await obstore.head_async(self.store, self.path(bucket, blob_id))
        except FileNotFoundError:
            return None
        etag = meta.get("e_tag")
        return int(meta["size"]), etag.strip('"') if isinstance(etag, str) else None

    async def delete(self, blobs: Iterable[tuple[str, uuid.UUID]]) -> None:
        paths = [self.path(bucket, blob_id) for bucket, blob_id in blobs]
        for start in range(0, len(paths), 1000):
            with contextlib.suppress(FileNotFoundError):
                await obstore.delete_async(self.store, paths[start : start + 1000])

    async def presigned_get(self, bucket: str, blob_id: uuid.UUID, seconds: int) -> str | None:
        if not self.presigned:
            return None
        return await obstore.sign_async(
            self.store, "GET", self.path(bucket, blob_id), timedelta(seconds=seconds)
        )

    def presigned_post(
        self, bucket: str, blob_id: uuid.UUID, max_bytes: int, content_type: str, seconds: int = 3600
    ) -> tuple[str, dict[str, str], datetime]:
        """A SigV4 POST policy: the URL and form fields with which a client uploads exactly this blob, up to
        `max_bytes`, until the returned expiry (what InsForge's presigned upload strategy hands out)."""
        assert self.settings.s3_access_key_id and self.settings.s3_secret_access_key
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=seconds)
        date = now.strftime("%Y%m%d")
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        region = self.settings.s3_region
        credential = f"{self.settings.s3_access_key_id}/{date}/{region}/s3/aws4_request"
        key = self.path(bucket, blob_id)
        fields = {
            "key": key,
            "Content-Type": content_type,
            "x-amz-algorithm": "AWS4-HMAC-SHA256",
            "x-amz-credential": credential,
            "x-amz-date": amz_date,
        }
        policy = {
            "expiration": expires.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "conditions": [
                {"bucket": self.bucket_name},
                {"key": key},
                {"Content-Type": content_type},
                ["content-length-range", 0, max_bytes],
                {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
                {"x-amz-credential": credential},
                {"x-amz-date": amz_date},
            ],
        }
        encoded = base64.b64encode(json.dumps(policy).encode()).decode()
        signing_key = ("AWS4" + self.settings.s3_secret_access_key).encode()
        for part in (date, region, "s3", "aws4_request"):
            signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
        fields["policy"] = encoded
        fields["x-amz-signature"] = hmac.new(signing_key, encoded.encode(), hashlib.sha256).hexdigest()
        endpoint = (self.settings.s3_endpoint_url or f"https://s3.{region}.amazonaws.com").rstrip("/")
        if self.settings.s3_force_path_style:
            url = f"{endpoint}/{self.bucket_name}"
        else:
            scheme, _, host = endpoint.partition("://")
            url = f"{scheme}://{self.bucket_name}.{host}"
        return url, fields, expires
