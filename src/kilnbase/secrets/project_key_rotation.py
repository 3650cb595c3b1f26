"""Rotating the project's API key and anon key with a grace period.

The new key and the previous ones live in `system.project_keys`, encrypted with the project's SecretBox, so
every API process loads the same keys (see `server.project_keys.KeyRing`). The previous key keeps working
until its grace period ends; a grace of 0 revokes it at once (a leaked key).
"""

from __future__ import annotations

import secrets
from datetime import datetime

from kilnbase.db.session import Database
from kilnbase.secrets.encryption import SecretBox
from kilnbase.server.project_keys import KeyKind, KeyRing, RotatedKeys

_PREFIX = {"api_key": "ik_", "anon_key": "anon_"}
_LOCK = "select pg_advisory_xact_lock(hashtext('kilnbase.project_keys'))"


def _context(kind: str) -> str:
    return f"system.project_keys.{kind}"


async def load(db: Database, box: SecretBox) -> RotatedKeys | None:
    """The rotated keys in force, or None when no key was ever rotated (the configured keys stand)."""
    async with db.as_owner() as cur:
        await cur.execute(
            "select kind, key_ciphertext, is_current, extract(epoch from expires_at)::float8 as expires_at "
            "from system.project_keys where is_current or expires_at > now()"
        )
        rows = await cur.fetchall()
    if not rows:
        return None
    current: dict[str, str] = {}
    previous: dict[str, list[tuple[str, float]]] = {"api_key": [], "anon_key": []}
    for row in rows:
        key = box.decrypt(row["key_ciphertext"], context=_context(row["kind"]))
        if row["is_current"]:
            current[row["kind"]] = key
        else:
            previous[row["kind"]].append((key, float(row["expires_at"])))
    return current, previous


async def rotate(
    db: Database, box: SecretBox, ring: KeyRing, kind: KeyKind, grace_hours: float
) -> tuple[str, datetime]:
    """A new current key; the old one expires after `grace_hours`. Returns (new key, old key expiry)."""
    new_key = _PREFIX[kind] + secrets.token_hex(32)
    async with db.as_owner() as cur:
        await cur.execute(_LOCK)
        await cur.execute("delete from system.project_keys where not is_current and expires_at <= now()")
        await cur.execute(
            "update system.project_keys set is_current = false, expires_at = now() + make_interval(secs => "
            "%s) "
            "where kind = %s and is_current returning expires_at",
            (grace_hours * 3600, kind),
        )
        demoted = await cur.fetchone()
        if demoted is None:
            # The first rotation: the configured key becomes the previous one.
            await cur.execute(
                "insert into system.project_keys (kind, key_ciphertext, is_current, expires_at) "
                "values (%s, %s, false, now() + make_interval(secs => %s)) returning expires_at",
                (kind, box.encrypt(ring.current(kind), context=_context(kind)), grace_hours * 3600),
            )
            demoted = await cur.fetchone()
        assert demoted is not None
        await cur.execute(
            "insert into system.project_keys (kind, key_ciphertext, is_current) values (%s, %s, true)",
            (kind, box.encrypt(new_key, context=_context(kind))),
        )
    await ring.refresh_now()
    expires_at: datetime = demoted["expires_at"]
    return new_key, expires_at
