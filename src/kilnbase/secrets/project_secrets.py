"""The project's secrets (InsForge's `/api/secrets`): named values encrypted at rest, for functions and apps.

A value is encrypted with the project's `SecretBox` (AES-256-GCM, the secrets key of its own, never the JWT
secret), with the secret's name bound as associated data, so a ciphertext moved to another row does not
decrypt. A delete is soft (`is_active = false`, InsForge's rule), and creating the key again revives it. A
reserved secret cannot be changed or deleted through the API (403), and the names the platform itself sets
for functions (`ANON_KEY`, `INSFORGE_BASE_URL`, ...) cannot be created. An expired secret reads as absent.
Every change, every read of a value and every refusal is audited.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from kilnbase import audit
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError, require_admin_actor
from kilnbase.identity.actor import Actor
from kilnbase.keys.secret_box import SecretBox

MODULE = "SECRETS"
KEY_PATTERN = re.compile(r"^[A-Z0-9_]+$")
MAX_KEY_LENGTH = 255
MAX_VALUE_BYTES = 64 * 1024
#: Names the platform sets itself (for functions, or as its own keys): never a user secret.
PLATFORM_KEYS = frozenset(
    {"API_KEY", "ANON_KEY", "JWT_SECRET", "ENCRYPTION_KEY", "INSFORGE_BASE_URL", "INSFORGE_INTERNAL_URL"}
)

_ISO = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'
_METADATA = (
    'id::text, key, is_active as "isActive", is_reserved as "isReserved", '
    f"to_char(last_used_at at time zone 'UTC', '{_ISO}') as \"lastUsedAt\", "
    f"to_char(expires_at at time zone 'UTC', '{_ISO}') as \"expiresAt\", "
    f"to_char(created_at at time zone 'UTC', '{_ISO}') as \"createdAt\", "
    f"to_char(updated_at at time zone 'UTC', '{_ISO}') as \"updatedAt\""
)
_USABLE = "is_active and (expires_at is null or expires_at > now())"
_KEY_AND_VALUE = (
    "Send key (uppercase letters, digits and underscores, e.g. STRIPE_API_KEY) and value, both non-empty."
)
_RESERVED = "A reserved secret cannot be changed or deleted through the API; use another key for a new value."


def sealing_context(key: str) -> str:
    """What a secret's value is sealed with besides the key: its name, so a value copied under another name
    does not open."""
    return f"system.secrets.{key}"


def _not_found(key: str) -> ApiError:
    return ApiError(
        404,
        "SECRET_NOT_FOUND",
        f"Secret not found: {key}",
        "List the secrets with GET /api/secrets; create one with POST /api/secrets {key, value}.",
    )


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise ApiError(400, "INVALID_INPUT", "Both key and value are required", _KEY_AND_VALUE)
    if len(key) > MAX_KEY_LENGTH or not KEY_PATTERN.match(key):
        raise ApiError(
            400,
            "INVALID_INPUT",
            "Invalid key format. Use uppercase letters, numbers, and underscores only (e.g., STRIPE_API_KEY)",
            _KEY_AND_VALUE,
        )
    return key


def _check_value(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ApiError(400, "INVALID_INPUT", "Both key and value are required", _KEY_AND_VALUE)
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise ApiError(
            413,
            "INVALID_INPUT",
            f"A secret's value is limited to {MAX_VALUE_BYTES} bytes.",
            "Store a smaller value; keep large data in storage and its location in the secret.",
        )
    return value


def _expiry(value: Any) -> datetime | None:
    """`expiresAt`: an ISO 8601 timestamp, or null for none."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed
    raise ApiError(
        400,
        "INVALID_INPUT",
        "expiresAt must be an ISO 8601 timestamp with a time zone, or null",
        "Send expiresAt like 2026-12-31T23:59:59Z, or null for a secret that never expires.",
    )


def _flag(body: dict[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is None or isinstance(value, bool):
        return value
    raise ApiError(
        400, "INVALID_INPUT", f"{name} must be a boolean", f"Send {name} as true or false, or leave it out."
    )


#: The soonest an agent may make a secret expire: an expiry a moment away is a delete a moment later.
AGENT_EXPIRY_NOTICE = timedelta(hours=24)


def _refuse_agents_delete_by_update(actor: Actor, body: dict[str, Any]) -> None:
    """An agent's delete of a secret waits for a person's approval (the `delete-secret` tool, `DELETE
    /api/secrets/:key`); switching it off (`isActive: false`), or making it expire within a day
    (`AGENT_EXPIRY_NOTICE`: an expiry seconds away is the same delete, seconds later), is sent there
    instead (403). A person sees the secret's coming expiry in time to undo it."""
    if actor.principal.agent is None:
        return
    switched_off = _flag(body, "isActive") is False
    expiry = _expiry(body["expiresAt"]) if "expiresAt" in body else None
    if switched_off or (expiry is not None and expiry < datetime.now(UTC) + AGENT_EXPIRY_NOTICE):
        raise ApiError(
            403,
            "FORBIDDEN",
            "An agent cannot switch a secret off or make it expire within 24 hours: that is a delete, which "
            "needs approval.",
            "Delete it with DELETE /api/secrets/:key (or the delete-secret tool), which a person approves; "
            "or set an expiry at least a day away.",
        )


def _refuse_agents_overwrite(actor: Actor, body: dict[str, Any]) -> None:
    """An agent cannot overwrite a secret's value (`PUT /api/secrets/:key` with `value`): the old value is
    lost with no undo, which is more than a delete loses (a soft delete keeps it, and a person can switch
    the secret back on), and a delete waits for a person. Refused (403), as switching a secret off is on
    this same route, rather than held for approval: a held call keeps its arguments, the new value, in
    plain text in the change request, which the agent that asked and every approver read back, while the
    store keeps values encrypted at rest and no tool ever returns one. An agent keeps a lossless way: the new
    value under a new key (POST /api/secrets), which its code then reads."""
    if actor.principal.agent is not None and "value" in body:
        raise ApiError(
            403,
            "FORBIDDEN",
            "An agent cannot overwrite a secret's value: the old value would be lost with no undo.",
            "Create the new value under another key with POST /api/secrets (or create-secret) and use that "
            "key; or ask a person with admin rights to change this one.",
        )


def _revive_refused(key: str) -> ApiError:
    """An agent's create of a key whose secret was deleted (soft, kept for a person to switch back on):
    reviving it would write over the kept value, the overwrite `_refuse_agents_overwrite` refuses."""
    return ApiError(
        403,
        "FORBIDDEN",
        f"Secret {key} was deleted and keeps its old value, which an agent cannot overwrite.",
        "Create the value under another key; or ask a person with admin rights to switch this secret back "
        "on (PUT /api/secrets/:key with isActive true) or to set its new value.",
    )


class ProjectSecrets:
    """The service behind `/api/secrets` (besides key rotation), and the store functions read their
    environment from."""

    def __init__(self, database: Database, box: SecretBox) -> None:
        self._database = database
        self._box = box

    async def list(self, actor: Actor) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        async with self._database.as_owner() as cur:
            await cur.execute(f"select {_METADATA} from system.secrets order by created_at desc limit 10000")
            return list(await cur.fetchall())

    async def get(self, actor: Actor, key: str) -> dict[str, str]:
        """The decrypted value of an active, unexpired secret (404 otherwise); the read is audited."""
        async with audit.refusals(self._database, actor, "GET_SECRET", MODULE, {"key": key}):
            require_admin_actor(actor)
        async with self._database.as_owner() as cur:
            await cur.execute(
                f"update system.secrets set last_used_at = now() where key = %s and {_USABLE} "
                "returning value_ciphertext",
                (key,),
            )
            row = await cur.fetchone()
            if row is None:
                raise _not_found(key)
            await audit.record(cur, actor, "GET_SECRET", MODULE, {"key": key})
        return {"key": key, "value": self._box.decrypt(row["value_ciphertext"], context=sealing_context(key))}

    async def create(self, actor: Actor, body: dict[str, Any]) -> str:
        """A new secret, or an inactive one revived with the new value (InsForge's rule; not for an agent,
        `_revive_refused`); its id."""
        details: dict[str, Any] = {"key": body.get("key")}
        async with audit.refusals(self._database, actor, "CREATE_SECRET", MODULE, details):
            require_admin_actor(actor)
            key = check_key(body.get("key"))
            value = _check_value(body.get("value"))
            reserved = _flag(body, "isReserved") or False
            expires_at = _expiry(body.get("expiresAt"))
            mode = body.get("mode")
            if mode is not None and mode != "strict":
                raise ApiError(
                    400,
                    "INVALID_INPUT",
                    "Invalid create mode. Omit mode for legacy behavior or use strict.",
                    'Leave mode out, or send mode "strict".',
                )
            if key in PLATFORM_KEYS:
                raise ApiError(
                    403,
                    "FORBIDDEN",
                    f"{key} is set by the platform and cannot be a project secret.",
                    "Pick another name; functions already see this value.",
                )
            ciphertext = self._box.encrypt(value, context=sealing_context(key))
            async with self._database.as_owner() as cur:
                await cur.execute(
                    "insert into system.secrets as s (key, value_ciphertext, is_reserved, expires_at) "
                    "values (%s, %s, %s, %s) on conflict (key) do update set "
                    "value_ciphertext = excluded.value_ciphertext, is_active = true, "
                    "is_reserved = excluded.is_reserved, expires_at = excluded.expires_at, "
                    "updated_at = now() "
                    "where not s.is_active and %s returning id::text",
                    (key, ciphertext, reserved, expires_at, actor.principal.agent is None),
                )
                row = await cur.fetchone()
                if row is None and actor.principal.agent is not None:
                    await cur.execute("select is_active from system.secrets where key = %s", (key,))
                    kept = await cur.fetchone()
                    if kept is not None and not kept["is_active"]:
                        raise _revive_refused(key)
                if row is None:
                    raise ApiError(
                        409,
                        "SECRET_ALREADY_EXISTS",
                        f"Secret already exists: {key}",
                        "Change its value with PUT /api/secrets/{key}, or choose another key.",
                    )
                details["id"] = row["id"]
                await audit.record(cur, actor, "CREATE_SECRET", MODULE, details)
        secret_id: str = row["id"]
        return secret_id

    async def _existing(self, key: str) -> dict[str, Any]:
        async with self._database.as_owner() as cur:
            await cur.execute("select id, is_reserved from system.secrets where key = %s", (key,))
            row = await cur.fetchone()
        if row is None:
            raise _not_found(key)
        return dict(row)

    async def update(self, actor: Actor, key: str, body: dict[str, Any]) -> None:
        details: dict[str, Any] = {"key": key}
        async with audit.refusals(self._database, actor, "UPDATE_SECRET", MODULE, details):
            require_admin_actor(actor)
            _refuse_agents_delete_by_update(actor, body)
            _refuse_agents_overwrite(actor, body)
            assignments: list[str] = []
            params: list[Any] = []
            if "value" in body:
                assignments.append("value_ciphertext = %s")
                params.append(self._box.encrypt(_check_value(body["value"]), context=sealing_context(key)))
            for field, column in (("isActive", "is_active"), ("isReserved", "is_reserved")):
                flag = _flag(body, field)
                if flag is not None:
                    assignments.append(f"{column} = %s")
                    params.append(flag)
            if "expiresAt" in body:
                assignments.append("expires_at = %s")
                params.append(_expiry(body["expiresAt"]))
            if not assignments:
                raise ApiError(
                    400,
                    "INVALID_INPUT",
                    "Nothing to update.",
                    "Send value, isActive, isReserved or expiresAt.",
                )
            existing = await self._existing(key)
            if existing["is_reserved"]:
                raise ApiError(403, "FORBIDDEN", f"Cannot update reserved secret: {key}", _RESERVED)
            details["updates"] = {
                "hasNewValue": "value" in body,
                **{name: body[name] for name in ("isActive", "isReserved", "expiresAt") if name in body},
            }
            async with self._database.as_owner() as cur:
                await cur.execute(
                    f"update system.secrets set {', '.join(assignments)}, updated_at = now() "
                    "where id = %s and not is_reserved",
                    (*params, existing["id"]),
                )
                await audit.record(cur, actor, "UPDATE_SECRET", MODULE, details)

    async def delete(self, actor: Actor, key: str) -> None:
        """Soft delete: the secret stops being served, and creating it again revives it."""
        details = {"key": key}
        async with audit.refusals(self._database, actor, "DELETE_SECRET", MODULE, details):
            require_admin_actor(actor)
            existing = await self._existing(key)
            if existing["is_reserved"]:
                raise ApiError(403, "FORBIDDEN", f"Cannot delete reserved secret: {key}", _RESERVED)
            async with self._database.as_owner() as cur:
                await cur.execute(
                    "update system.secrets set is_active = false, updated_at = now() where id = %s",
                    (existing["id"],),
                )
                await audit.record(cur, actor, "DELETE_SECRET", MODULE, details)

    async def values(self, allow: Sequence[str] | None = None) -> tuple[dict[str, str], float | None]:
        """Every active, unexpired secret (only those named in `allow` when it is given), decrypted, and
        when the first of them expires (epoch seconds, or None): a function's environment, and when it must
        be rebuilt. Kilnbase's own read, for the functions runtime; not audited per call."""
        query = (
            "select key, value_ciphertext, extract(epoch from expires_at)::float8 as expires_at "
            f"from system.secrets where {_USABLE}"
        )
        params: tuple[Any, ...] = ()
        if allow is not None:
            query += " and key = any(%s)"
            params = (list(allow),)
        async with self._database.as_owner() as cur:
            await cur.execute(query + " order by key limit 1000", params)
            rows = await cur.fetchall()
        expiries = [row["expires_at"] for row in rows if row["expires_at"] is not None]
        decrypted = {
            row["key"]: self._box.decrypt(row["value_ciphertext"], context=sealing_context(row["key"]))
            for row in rows
        }
        return decrypted, (min(expiries) if expiries else None)
