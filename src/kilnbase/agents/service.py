"""Agent keys and the project's agent settings: the service behind `/api/agents`.

An admin gives each coding agent its own key (`kba_...`) with a name, scopes, an expiry and whether it may
approve changes; the secret is shown once and only its SHA-256 is kept. An agent can trade its key for a
short-lived access token per session (so the long-lived key stays out of the agent's transcript), which
stops working as soon as its key is revoked. Read-only mode refuses every write from every agent key, on
REST and MCP alike. Agent keys cannot manage agent keys (no agent can widen its own reach). Every change is
audited (module `AGENTS`), and this process reloads its view of the keys before answering, so the caller's
next request already sees the change; other processes hear of it by NOTIFY.
"""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kilnbase import audit
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError, require_admin_actor, require_person
from kilnbase.identity.actor import Actor
from kilnbase.identity.agent_keys import AgentKeys, secret_digest
from kilnbase.keys.access_tokens import TokenService

MODULE = "AGENTS"
#: `<group>:read|write` (a capability's name, or `*`), `tool:<name>`, or one of the exact scopes an agent may
#: be given beyond its groups: owner-level SQL, and invoking functions without managing them.
SCOPE_PATTERN = re.compile(
    r"(\*|[a-z][a-z0-9_]{0,39}):(read|write)|tool:[a-z][a-z0-9-]{0,63}|database:owner-sql|functions:invoke"
)
#: The longest an agent's session token lives.
MAX_TOKEN_SECONDS = 3600


class NewAgentKey(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(default_factory=lambda: ["*:read"], min_length=1, max_length=100)
    expiresInHours: float | None = Field(default=None, gt=0, le=24 * 366)
    canApprove: bool = False

    @field_validator("scopes")
    @classmethod
    def known_scopes(cls, scopes: list[str]) -> list[str]:
        bad = [scope for scope in scopes if not SCOPE_PATTERN.fullmatch(scope)]
        if bad:
            raise ValueError(
                f"unknown scope {bad[0]!r}: use <group>:read, <group>:write (group: a capability such as "
                "database, auth, ai, or *), tool:<name>, database:owner-sql or functions:invoke"
            )
        return sorted(set(scopes))


class AgentSettings(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    readOnly: bool


_KEY_COLUMNS = "id::text, name, prefix, scopes, can_approve, expires_at, created_by, created_at, revoked_at"


def _key_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "scopes": row["scopes"],
        "canApprove": row["can_approve"],
        "expiresAt": row["expires_at"],
        "createdBy": row["created_by"],
        "createdAt": row["created_at"],
        "revokedAt": row["revoked_at"],
    }


def require_manager(actor: Actor) -> None:
    """An admin who is not an agent: agents never manage agent keys. The routes ask it before they read a
    body, so that an agent's request is refused as such (403), not sent to fix a body it may not send."""
    require_person(
        actor, "Agent keys cannot manage agent keys or agent settings.", "Ask a person with admin rights."
    )


class Agents:
    def __init__(self, database: Database, keys: AgentKeys, tokens: TokenService) -> None:
        self.database = database
        self.keys = keys
        self.tokens = tokens

    async def create_key(self, actor: Actor, request: NewAgentKey) -> dict[str, Any]:
        require_manager(actor)
        secret = "kba_" + secrets.token_hex(32)
        expires_at = (
            datetime.now(UTC) + timedelta(hours=request.expiresInHours) if request.expiresInHours else None
        )
        async with self.database.as_owner() as cur:
            await cur.execute(
                "insert into system.agent_keys (name, prefix, secret_sha256, scopes, can_approve, "
                f"expires_at, created_by) values (%s, %s, %s, %s, %s, %s, %s) returning {_KEY_COLUMNS}",
                (
                    request.name,
                    secret[:12],
                    secret_digest(secret),
                    request.scopes,
                    request.canApprove,
                    expires_at,
                    actor.name,
                ),
            )
            row = await cur.fetchone()
            assert row is not None
            details = {
                "keyId": row["id"],
                "name": request.name,
                "scopes": request.scopes,
                "canApprove": request.canApprove,
            }
            await audit.record(cur, actor, "CREATE_AGENT_KEY", MODULE, details)
        await self.keys.reload()
        return {**_key_json(row), "key": secret}

    async def list_keys(self, actor: Actor) -> list[dict[str, Any]]:
        require_manager(actor)
        async with self.database.as_owner() as cur:
            await cur.execute(f"select {_KEY_COLUMNS} from system.agent_keys order by created_at desc")
            return [_key_json(row) for row in await cur.fetchall()]

    async def revoke_key(self, actor: Actor, key_id: str) -> dict[str, Any]:
        require_manager(actor)
        async with self.database.as_owner() as cur:
            await cur.execute(
                f"update system.agent_keys set revoked_at = coalesce(revoked_at, now()) "
                f"where id::text = %s returning {_KEY_COLUMNS}",
                (key_id,),
            )
            row = await cur.fetchone()
            if row is None:
                raise ApiError(
                    404, "NOT_FOUND", "No agent key with this id.", "List keys with GET /api/agents/keys."
                )
            await audit.record(cur, actor, "REVOKE_AGENT_KEY", MODULE, {"keyId": key_id, "name": row["name"]})
        await self.keys.reload()
        return _key_json(row)

    async def settings(self, actor: Actor) -> dict[str, Any]:
        require_admin_actor(actor)
        return {"readOnly": self.keys.read_only}

    async def update_settings(self, actor: Actor, change: AgentSettings) -> dict[str, Any]:
        require_manager(actor)
        async with self.database.as_owner() as cur:
            await cur.execute(
                "update system.agent_settings set read_only = %s, updated_at = now()", (change.readOnly,)
            )
            await audit.record(cur, actor, "UPDATE_AGENT_SETTINGS", MODULE, {"readOnly": change.readOnly})
        await self.keys.reload()
        return {"readOnly": change.readOnly}

    async def session_token(self, actor: Actor, seconds: int) -> dict[str, Any]:
        """A short-lived access token for the calling agent key's session."""
        agent = actor.principal.agent
        # A token minted from the key may not mint another: it would renew itself for as long as the key
        # lives, and a leaked token would never expire.
        if agent is None or "agent_session" in actor.principal.claims:
            raise ApiError(
                403,
                "FORBIDDEN",
                "Only an agent key can mint an agent session token.",
                "Send the agent key as the bearer.",
            )
        seconds = min(seconds, MAX_TOKEN_SECONDS)
        if agent.expires_at is not None:
            seconds = max(1, min(seconds, int((agent.expires_at - datetime.now(UTC)).total_seconds())))
        session = f"agent-{uuid.uuid4()}"
        claims = {
            "sub": f"agent:{agent.id}",
            "role": "project_admin",
            "agent_key": agent.id,
            "agent_session": session,
        }
        token = self.tokens.sign(claims, expires_in=seconds)
        await audit.record(
            self.database, actor, "MINT_AGENT_TOKEN", MODULE, {"keyId": agent.id, "expiresIn": seconds}
        )
        return {"accessToken": token, "tokenType": "Bearer", "expiresIn": seconds, "session": session}
