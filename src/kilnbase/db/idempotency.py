"""The store behind `Idempotency-Key`: one row per (credential, key), claimed before the work runs and
filled with its response after, so a retry replays the response and a concurrent duplicate is refused.

A claim is an INSERT that only one caller can win; the winner runs the work and saves its result, or
releases the claim when the work failed in a way a retry may fix (a 5xx, an exception, a response too large
to keep). A key is bound to the request it was first used with (its SHA-256): the same key with another
request is the caller's mistake. Keys live 24 hours, as Stripe's do.

A kept response is sealed with the project's encryption key (`SecretBox`, bound to its owner and key), its
headers with it: it may be what must never be stored in the clear (a new agent key, shown once and kept
only as a hash; a rotated API key; a session's tokens and refresh cookie), and the table is in every
database backup. A sealed row has no `headers` of its own; a row a server from before the sealing kept
(several API processes upgraded one by one) has them, and its body in the clear, and is replayed as it is.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from kilnbase.db.session import Database
from kilnbase.keys.secret_box import DecryptionError, SecretBox

#: How long a key is remembered.
LIFETIME = "24 hours"
#: The largest response kept for replay; a larger one is not kept (its key is released).
MAX_STORED_BYTES = 1 << 20
MAX_KEY_LENGTH = 255


def request_digest(*parts: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


@dataclass(frozen=True)
class Stored:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Claim:
    """What a caller found: `run` (it owns the key now), `replay` (with the stored response),
    `mismatch` (the key was used for another request), `running` (the first call has not finished) or
    `lost` (the first call finished, but what it answered was sealed with an encryption key this server no
    longer has: it cannot be replayed, and running the call again would not be a retry)."""

    outcome: Literal["run", "replay", "mismatch", "running", "lost"]
    stored: Stored | None = None


def _context(owner: str, key: str) -> str:
    """What a sealed response is bound to: a row copied to another owner or key does not open."""
    return f"idempotency\n{owner}\n{key}"


class IdempotencyKeys:
    def __init__(self, database: Database, box: SecretBox) -> None:
        self.database = database
        self.box = box

    def _seal(self, owner: str, key: str, stored: Stored) -> bytes:
        payload = {"headers": stored.headers, "body": base64.b64encode(stored.body).decode()}
        return self.box.encrypt(orjson.dumps(payload).decode(), context=_context(owner, key)).encode()

    def _opened(self, owner: str, key: str, row: dict[str, Any]) -> Stored:
        if row["headers"] is not None:  # kept in the clear, by a server from before the sealing
            headers = [(str(name), str(value)) for name, value in row["headers"]]
            return Stored(row["status"], headers, bytes(row["body"]))
        payload = orjson.loads(self.box.decrypt(bytes(row["body"]).decode(), context=_context(owner, key)))
        headers = [(str(name), str(value)) for name, value in payload["headers"]]
        return Stored(row["status"], headers, base64.b64decode(payload["body"]))

    async def claim(self, owner: str, key: str, digest: bytes) -> Claim:
        async with self.database.as_owner() as cur:
            await cur.execute(
                f"delete from system.idempotency_keys where owner = %s and key = %s "
                f"and created_at < now() - interval '{LIFETIME}'",
                (owner, key),
            )
            await cur.execute(
                "insert into system.idempotency_keys (owner, key, request_sha256) values (%s, %s, %s) "
                "on conflict do nothing returning 1",
                (owner, key, digest),
            )
            if await cur.fetchone() is not None:
                return Claim("run")
            await cur.execute(
                "select request_sha256, status, headers, body from system.idempotency_keys "
                "where owner = %s and key = %s",
                (owner, key),
            )
            row: dict[str, Any] | None = await cur.fetchone()
        if row is None:  # released between our insert and select: the caller may simply retry
            return Claim("running")
        if bytes(row["request_sha256"]) != digest:
            return Claim("mismatch")
        if row["status"] is None:
            return Claim("running")
        try:
            return Claim("replay", self._opened(owner, key, row))
        except DecryptionError:
            return Claim("lost")

    async def save(self, owner: str, key: str, stored: Stored) -> None:
        async with self.database.as_owner() as cur:
            await cur.execute(
                "update system.idempotency_keys set status = %s, headers = null, body = %s "
                "where owner = %s and key = %s",
                (stored.status, self._seal(owner, key, stored), owner, key),
            )
            # Housekeeping while here: a few dead keys at a time, never a long delete.
            await cur.execute(
                "delete from system.idempotency_keys where ctid = any(array(select ctid from "
                f"system.idempotency_keys where created_at < now() - interval '{LIFETIME}' limit 100))"
            )

    async def release(self, owner: str, key: str) -> None:
        async with self.database.as_owner() as cur:
            await cur.execute(
                "delete from system.idempotency_keys where owner = %s and key = %s and status is null",
                (owner, key),
            )
