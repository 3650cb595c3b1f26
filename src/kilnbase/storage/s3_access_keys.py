"""S3 access keys for the S3 protocol endpoint: created by an admin (the secret shown once, stored encrypted
with the project's secret box), listed without secrets, deleted; looked up by the endpoint on every request
(cached for a few seconds, so a deleted key stops working within moments in every process)."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

from kilnbase import audit
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError, refuse_agent_keys, require_admin_actor
from kilnbase.identity.actor import Actor
from kilnbase.keys.secret_box import SecretBox

MODULE = "STORAGE"
MAX_KEYS = 50
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_CONTEXT = "storage.s3_access_keys"
_CACHE_SECONDS = 5.0
#: Held by a creation from its count to its commit: under READ COMMITTED two creations would otherwise both
#: count `MAX_KEYS - 1` and both insert (in any process: the lock is the database's).
_ONE_CREATION_AT_A_TIME = "select pg_advisory_xact_lock(hashtext('storage.s3_access_keys.create'))"


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _require_person(actor: Actor) -> None:
    """An admin who is not an agent. An S3 access key is a credential of its own: one minted by an agent
    key would outlive that key's revocation, reach storage past its scopes, and delete objects past the
    approval an agent's deletion waits for. Agents may list the keys (no secret is shown), not make or
    delete them."""
    require_admin_actor(actor)
    refuse_agent_keys(
        actor,
        "Agent keys cannot create or delete S3 access keys.",
        "Ask a person with admin rights (the project's API key).",
    )


class S3AccessKeys:
    def __init__(self, database: Database, secret_box: SecretBox) -> None:
        self.database = database
        self.secret_box = secret_box
        self._cache: dict[str, tuple[float, str | None]] = {}
        #: When this process last wrote each key's `last_used_at` (written at most every few seconds).
        self._marked: dict[str, float] = {}

    async def create(self, actor: Actor, description: str | None) -> dict[str, Any]:
        _require_person(actor)
        access_key_id = "KB" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(18))
        secret = secrets.token_urlsafe(30)
        encrypted = self.secret_box.encrypt(secret, context=f"{_CONTEXT}:{access_key_id}")
        async with self.database.as_owner() as cur:
            await cur.execute(_ONE_CREATION_AT_A_TIME)
            await cur.execute("select count(*) as n from storage.s3_access_keys")
            counted = await cur.fetchone()
            if counted is not None and int(counted["n"]) >= MAX_KEYS:
                raise ApiError(
                    400,
                    "STORAGE_INVALID_PARAMETER",
                    f"S3 access key limit reached ({MAX_KEYS}). Delete an existing key first.",
                    "List the keys with GET /api/storage/s3/access-keys and delete one with DELETE "
                    "/api/storage/s3/access-keys/{id}.",
                )
            await cur.execute(
                "insert into storage.s3_access_keys "
                "(access_key_id, secret_access_key_encrypted, description) "
                "values (%s, %s, %s) returning id::text, created_at",
                (access_key_id, encrypted, description),
            )
            row = await cur.fetchone()
            assert row is not None
            await audit.record(cur, actor, "CREATE_S3_ACCESS_KEY", MODULE, {"accessKeyId": access_key_id})
        return {
            "id": row["id"],
            "accessKeyId": access_key_id,
            "description": description,
            "createdAt": _iso(row["created_at"]),
            "lastUsedAt": None,
            "secretAccessKey": secret,
        }

    async def list(self, actor: Actor) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        async with self.database.as_owner() as cur:
            await cur.execute(
                "select id::text, access_key_id, description, created_at, last_used_at "
                "from storage.s3_access_keys order by created_at limit 1000"
            )
            rows = await cur.fetchall()
        return [
            {
                "id": r["id"],
                "accessKeyId": r["access_key_id"],
                "description": r["description"],
                "createdAt": _iso(r["created_at"]),
                "lastUsedAt": _iso(r["last_used_at"]),
            }
            for r in rows
        ]

    async def delete(self, actor: Actor, key_id: str) -> None:
        _require_person(actor)
        try:
            async with self.database.as_owner() as cur:
                await cur.execute(
                    "delete from storage.s3_access_keys where id::text = %s returning access_key_id",
                    (key_id,),
                )
                row = await cur.fetchone()
                if row is None:
                    raise ApiError(
                        404,
                        "STORAGE_NOT_FOUND",
                        "S3 access key not found",
                        "List the access keys with GET /api/storage/s3/access-keys.",
                    )
                await audit.record(cur, actor, "DELETE_S3_ACCESS_KEY", MODULE, {"id": key_id})
        finally:
            self._cache.clear()

    async def secret_for(self, access_key_id: str) -> str | None:
        """The secret of a key in force, or None (cached briefly, misses too)."""
        now = time.monotonic()
        cached = self._cache.get(access_key_id)
        if cached is not None and now - cached[0] < _CACHE_SECONDS:
            return cached[1]
        async with self.database.as_owner() as cur:
            await cur.execute(
                "select secret_access_key_encrypted from storage.s3_access_keys where access_key_id = %s",
                (access_key_id,),
            )
            row = await cur.fetchone()
        secret = (
            self.secret_box.decrypt(row["secret_access_key_encrypted"], context=f"{_CONTEXT}:{access_key_id}")
            if row
            else None
        )
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[access_key_id] = (now, secret)
        return secret

    async def mark_used(self, access_key_id: str) -> None:
        """Note that the key signed a request: once its signature held, never before (a key's id is in every
        presigned URL, so anyone could send one with a wrong signature). At most every few seconds a key."""
        now = time.monotonic()
        if now - self._marked.get(access_key_id, -_CACHE_SECONDS) < _CACHE_SECONDS:
            return
        if len(self._marked) > 1000:
            self._marked.clear()
        self._marked[access_key_id] = now
        async with self.database.as_owner() as cur:
            await cur.execute(
                "update storage.s3_access_keys set last_used_at = now() where access_key_id = %s",
                (access_key_id,),
            )
