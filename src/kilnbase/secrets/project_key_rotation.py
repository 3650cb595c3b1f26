"""Rotating the project's API key and anon key with a grace period.

The new key and the previous ones live in `system.project_keys`, encrypted with the project's SecretBox, so
every API process loads the same keys (see `keys.project_keys.KeyRing`). The previous key keeps working
until its grace period ends; a grace of 0 revokes it at once (a leaked key). A rotation is audited in the
transaction that makes it.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from kilnbase import audit
from kilnbase.config import Settings
from kilnbase.db.session import Database
from kilnbase.http.errors import ADMIN_ONLY, ApiError, refuse_agent_keys
from kilnbase.identity.actor import Actor
from kilnbase.keys.project_keys import KeyKind, KeyRing, RotatedKeys
from kilnbase.keys.secret_box import SecretBox

_PREFIX = {"api_key": "ik_", "anon_key": "anon_"}
_VARIABLE = {"api_key": "ACCESS_API_KEY", "anon_key": "ACCESS_ANON_KEY"}
_LOCK = "select pg_advisory_xact_lock(hashtext('kilnbase.project_keys'))"


def sealing_context(kind: str) -> str:
    """What a rotated key is sealed with besides the key: its kind, so an anon key never opens as the API
    key."""
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
        key = box.decrypt(row["key_ciphertext"], context=sealing_context(row["kind"]))
        if row["is_current"]:
            current[row["kind"]] = key
        else:
            previous[row["kind"]].append((key, float(row["expires_at"])))
    return current, previous


@dataclass(frozen=True)
class Rotated:
    key: str
    previous_expires_at: datetime


class KeyRotation:
    """The service behind `/api/secrets/{api,anon}-key/rotate`."""

    def __init__(self, settings: Settings, database: Database, box: SecretBox, ring: KeyRing) -> None:
        self._settings = settings
        self._database = database
        self._box = box
        self._ring = ring

    @contextlib.asynccontextmanager
    async def keys_from_database(self) -> AsyncIterator[None]:
        """While running, the ring reloads rotated keys from the database, so every process agrees."""
        self._ring.attach(partial(load, self._database, self._box))
        try:
            yield
        finally:
            self._ring.attach(None)

    def current_anon_key(self) -> str:
        """The anon key in force (after any rotation), which client apps embed."""
        return self._ring.current("anon_key")

    @property
    def base_url(self) -> str:
        """The URL client apps reach this server by (`API_BASE_URL`), which they embed beside the anon key."""
        return self._settings.base_url

    def _check_allowed(self, actor: Actor, kind: KeyKind) -> None:
        if not actor.is_admin:
            raise ApiError(403, "FORBIDDEN", "Rotating keys needs admin rights.", ADMIN_ONLY)
        # The answer is the new key: the API key holds every right without an agent key's scopes,
        # approvals and read-only mode, and rotating either key cuts off whoever holds the old one.
        refuse_agent_keys(
            actor,
            "An agent key may not rotate the project's keys: the new key would lift the agent key's "
            "scopes, approvals and read-only mode, and the old one would stop working for its holders.",
            "Ask the project admin to rotate the key (with the API key or the dashboard).",
        )
        pinned = self._settings.access_api_key if kind == "api_key" else self._settings.access_anon_key
        if pinned:
            variable = _VARIABLE[kind]
            raise ApiError(
                409,
                "FORBIDDEN",
                f"This key is set by {variable}; rotating it here would be undone at the next start.",
                f"Change {variable} in the environment and restart, or unset it to rotate through the API.",
            )

    async def rotate(self, actor: Actor, kind: KeyKind, grace_hours: float) -> Rotated:
        """A new current key; the old one expires after `grace_hours`."""
        action = "ROTATE_API_KEY" if kind == "api_key" else "ROTATE_ANON_KEY"
        async with audit.refusals(
            self._database, actor, action, "SECRETS", {"gracePeriodHours": grace_hours}
        ):
            self._check_allowed(actor, kind)
        new_key = _PREFIX[kind] + secrets.token_hex(32)
        box = self._box
        async with self._database.as_owner() as cur:
            await cur.execute(_LOCK)
            await cur.execute("delete from system.project_keys where not is_current and expires_at <= now()")
            await cur.execute(
                "update system.project_keys set is_current = false, "
                "expires_at = now() + make_interval(secs => %s) where kind = %s and is_current "
                "returning expires_at",
                (grace_hours * 3600, kind),
            )
            demoted = await cur.fetchone()
            if demoted is None:
                # The first rotation: the configured key becomes the previous one.
                await cur.execute(
                    "insert into system.project_keys (kind, key_ciphertext, is_current, expires_at) "
                    "values (%s, %s, false, now() + make_interval(secs => %s)) returning expires_at",
                    (
                        kind,
                        box.encrypt(self._ring.current(kind), context=sealing_context(kind)),
                        grace_hours * 3600,
                    ),
                )
                demoted = await cur.fetchone()
            assert demoted is not None
            await cur.execute(
                "insert into system.project_keys (kind, key_ciphertext, is_current) values (%s, %s, true)",
                (kind, box.encrypt(new_key, context=sealing_context(kind))),
            )
            await audit.record(cur, actor, action, "SECRETS", {"gracePeriodHours": grace_hours})
        await self._ring.refresh_now()
        return Rotated(new_key, demoted["expires_at"])
