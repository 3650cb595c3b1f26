"""The functions service: InsForge's `/api/functions` management (admin), audited, over the runtime.

Code that would be served is type-checked (`deno check`) first; code that fails is refused with the
compiler's message and nothing is stored, so the version already deployed keeps serving. Every change bumps
the function's revision, which every API process's runtime compares with its warm workers'.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from psycopg import errors

from kilnbase import audit
from kilnbase.config import Settings
from kilnbase.db.session import Database
from kilnbase.functions.checker import check_code
from kilnbase.functions.definitions import FunctionChanges, NewFunction
from kilnbase.functions.runtime import Runtime
from kilnbase.functions.workers import FunctionLoadError
from kilnbase.http.errors import ApiError, require_admin_actor
from kilnbase.identity.actor import Actor

log = logging.getLogger("kilnbase.functions")

MODULE = "FUNCTIONS"
_ISO = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'
_FIELDS = (
    'id::text, slug, name, description, status, secrets, deployed_by_agent as "deployedByAgent", '
    f"to_char(created_at at time zone 'UTC', '{_ISO}') as \"createdAt\", "
    f"to_char(updated_at at time zone 'UTC', '{_ISO}') as \"updatedAt\", "
    f"to_char(deployed_at at time zone 'UTC', '{_ISO}') as \"deployedAt\""
)


def _not_found(slug: str) -> ApiError:
    return ApiError(
        404, "FUNCTION_NOT_FOUND", f"Function not found: {slug}", "GET /api/functions lists them."
    )


def _slug_taken() -> ApiError:
    return ApiError(
        409,
        "FUNCTION_ALREADY_EXISTS",
        "Function with this slug already exists",
        "Choose another slug, or change the existing function with PUT /api/functions/{slug}.",
    )


class FunctionsService:
    def __init__(self, settings: Settings, database: Database, runtime: Runtime) -> None:
        self.settings = settings
        self.database = database
        self.runtime = runtime
        self._warming: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def _audited(self, actor: Actor, action: str, details: dict[str, Any]) -> AsyncIterator[None]:
        async with audit.refusals(self.database, actor, action, MODULE, details):
            require_admin_actor(actor)
            yield

    async def _check(self, code: str) -> None:
        config = self.settings.functions
        await check_code(
            code,
            self.runtime.deno_dir,
            self.runtime.base_dir / "build",
            config.check_timeout_seconds,
            self.runtime.sandbox,
        )

    def _warm(self, slug: str) -> None:
        """Start the new version's workers now, so the first invocation finds them warm."""

        async def warm() -> None:
            definition = await self.runtime.definition(slug)
            if definition is not None and definition.status == "active":
                with contextlib.suppress(FunctionLoadError):
                    await self.runtime.pool_for(definition)

        task = asyncio.create_task(warm())
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)

    async def list(self, actor: Actor) -> dict[str, Any]:
        require_admin_actor(actor)
        async with self.database.as_owner() as cur:
            await cur.execute(
                f"select {_FIELDS} from functions.definitions order by created_at desc limit 1000"
            )
            rows = await cur.fetchall()
        return {"functions": rows, "runtime": await self.runtime.health(), "deploymentUrl": None}

    async def get(self, actor: Actor, slug: str) -> dict[str, Any]:
        require_admin_actor(actor)
        async with self.database.as_owner() as cur:
            await cur.execute(f"select {_FIELDS}, code from functions.definitions where slug = %s", (slug,))
            row = await cur.fetchone()
        if row is None:
            raise _not_found(slug)
        return dict(row)

    async def create(self, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
        details: dict[str, Any] = {"slug": body.get("slug"), "name": body.get("name")}
        async with self._audited(actor, "CREATE_FUNCTION", details):
            new = NewFunction.parse(body, self.settings.functions.max_code_bytes)
            details.update(slug=new.slug, status=new.status)
            _check_secrets_reach(actor, new.secrets, new.slug)
            async with self.database.as_owner() as cur:
                await cur.execute("select 1 from functions.definitions where slug = %s", (new.slug,))
                if await cur.fetchone() is not None:
                    raise _slug_taken()
            if new.status == "active":
                await self._check(new.code)
            try:
                async with self.database.as_owner() as cur:
                    await cur.execute(
                        "insert into functions.definitions (slug, name, description, code, status, secrets, "
                        "deployed_at, deployed_by_agent) "
                        "values (%s, %s, %s, %s, %s, %s, case when %s then now() end, %s) "
                        f"returning {_FIELDS}, code",
                        (
                            new.slug,
                            new.name,
                            new.description,
                            new.code,
                            new.status,
                            new.secrets,
                            new.status == "active",
                            actor.agent_key is not None,
                        ),
                    )
                    created = await cur.fetchone()
                    assert created is not None
                    details["functionId"] = created["id"]
                    await audit.record(cur, actor, "CREATE_FUNCTION", MODULE, details)
            except errors.UniqueViolation:
                raise _slug_taken() from None
        self.runtime.forget(new.slug)
        if new.status == "active":
            self._warm(new.slug)
        return {"success": True, "function": dict(created), "deployment": None}

    async def update(self, actor: Actor, slug: str, body: dict[str, Any]) -> dict[str, Any]:
        details: dict[str, Any] = {"slug": slug}
        async with self._audited(actor, "UPDATE_FUNCTION", details):
            changes = FunctionChanges.parse(body, self.settings.functions.max_code_bytes)
            if changes.empty:
                raise ApiError(
                    400, "INVALID_INPUT", "Nothing to update.", "Send name, code, description or status."
                )
            details["changes"] = {k: v for k, v in body.items() if k != "code"} | {
                "code": changes.code is not None
            }
            async with self.database.as_owner() as cur:
                await cur.execute(
                    "select code, status, secrets from functions.definitions where slug = %s", (slug,)
                )
                existing = await cur.fetchone()
            if existing is None:
                raise _not_found(slug)
            if changes.code is not None or changes.secrets_given:
                _check_secrets_reach(
                    actor, changes.secrets if changes.secrets_given else existing["secrets"], slug
                )
            status = changes.status or existing["status"]
            code = changes.code if changes.code is not None else existing["code"]
            redeploy = changes.code is not None or changes.status is not None or changes.secrets_given
            if status == "active" and (changes.code is not None or existing["status"] != "active"):
                await self._check(code)
            async with self.database.as_owner() as cur:
                await cur.execute(
                    "update functions.definitions set name = coalesce(%s, name), "
                    "description = coalesce(%s, description), code = %s, status = %s, "
                    "secrets = case when %s then %s else secrets end, "
                    "revision = revision + case when %s then 1 else 0 end, updated_at = now(), "
                    "deployed_at = case when %s then now() else deployed_at end, "
                    "deployed_by_agent = case when %s then true when %s then false "
                    "else deployed_by_agent end "
                    f"where slug = %s returning {_FIELDS}, code",
                    (
                        changes.name,
                        changes.description,
                        code,
                        status,
                        changes.secrets_given,
                        changes.secrets,
                        redeploy,
                        redeploy and status == "active",
                        actor.agent_key is not None,
                        redeploy,
                        slug,
                    ),
                )
                updated = await cur.fetchone()
                if updated is None:
                    raise _not_found(slug)
                await audit.record(cur, actor, "UPDATE_FUNCTION", MODULE, details)
        if status == "active":
            self.runtime.forget(slug)
            self._warm(slug)
        else:
            await self.runtime.drop(slug)
        return {"success": True, "function": dict(updated), "deployment": None}

    async def delete(self, actor: Actor, slug: str) -> dict[str, Any]:
        audited = self._audited(actor, "DELETE_FUNCTION", {"slug": slug})
        async with audited, self.database.as_owner() as cur:
            await cur.execute("delete from functions.definitions where slug = %s returning id", (slug,))
            if await cur.fetchone() is None:
                raise _not_found(slug)
            await audit.record(cur, actor, "DELETE_FUNCTION", MODULE, {"slug": slug})
        await self.runtime.drop(slug)
        return {"success": True, "message": f"Function {slug} deleted successfully"}

    async def logs(self, actor: Actor, slug: str, limit: int) -> dict[str, Any]:
        """A function's newest log lines (its invocations and what it printed), oldest first; lines still
        queued are written first, so an invocation that has returned is in them. No lines for a slug no
        function has is 404, not an empty list that reads as a function never called (a deleted
        function's lines are still shown)."""
        require_admin_actor(actor)
        await self.runtime.logs.flush()
        async with self.database.as_owner() as cur:
            await cur.execute(
                "select * from (select id, to_char(created_at at time zone 'UTC', "
                '\'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"\') as timestamp, request_id as "requestId", level, '
                'message, status, duration_ms as "durationMs" from functions.logs where slug = %s '
                "order by id desc limit %s) newest order by id",
                (slug, limit),
            )
            rows = await cur.fetchall()
            if not rows:
                await cur.execute("select 1 from functions.definitions where slug = %s", (slug,))
                if await cur.fetchone() is None:
                    raise _not_found(slug)
        return {"slug": slug, "logs": [{k: v for k, v in row.items() if k != "id"} for row in rows]}


def _check_secrets_reach(actor: Actor, secrets: list[str] | None, slug: str) -> None:
    """An agent key may write a function's code, or choose its secrets, only for a function that reads no
    secret, unless it may read secrets itself (`secrets:read`): a function sees its secrets' values
    (`secrets` null: every active secret), so its code can answer them to whoever calls it, and writing it
    is reading them. People, and agents that may read secrets, pass; so does a function deployed with
    `secrets: []`."""
    principal = actor.principal
    if principal.agent is None or secrets == [] or principal.allows("secrets", "read"):
        return
    sees = "every secret" if secrets is None else "the secrets " + ", ".join(secrets)
    raise ApiError(
        403,
        "FORBIDDEN",
        f"This agent key may not deploy code for {slug} that sees {sees}: its scopes do not reach "
        "secrets:read, and a function's code can answer the values of the secrets it sees.",
        'Deploy it with "secrets": [] (it then sees no secret), or ask an admin for a key with '
        "secrets:read (POST /api/agents/keys).",
    )
