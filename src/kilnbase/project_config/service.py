"""The project's config: read it (`GET /api/config`), and apply a file with a plan (`POST /api/config/apply`).

An apply runs in one transaction on the owner pool, and everything in it is transactional: it takes the
project's config lock, reads the live config, computes the plan, then makes each change through the owning
service's own method (`sections.py`), each with its audit entry, and one `APPLY_CONFIG` entry for the whole.
A change refused midway (a bucket to prune that holds objects, a name taken meanwhile) rolls back every
change before it, and the refusal is recorded on its own. Nothing outside the database is touched: pruning
deletes only empty buckets (no stored bytes to remove, which no transaction could bring back), and a bucket
that holds objects or uploads in progress refuses the whole apply with 409.

A dry run makes the same changes in the same transaction and rolls it back, so it answers exactly what the
apply would (its plan, or the refusal the apply would meet) and changes nothing, its audit entries included;
a refused dry run is recorded as refused (with `dryRun: true`), as every refusal is.

The lock is a transaction-level advisory lock, so applies from any number of processes run one after the
other, each planning against what the one before it committed; it goes with the transaction, however that
ends. Waiting for it is bounded (`LOCK_WAIT`).

Who may: an admin (the API key, an admin session, an agent key). An agent key needs the read scope of every
section the file names (`auth:read`, `storage:read`), and, for an apply that changes a section, that
section's write scope (`auth:write` is what `PUT /api/auth/config` asks of an agent key; `storage:write` what
the bucket routes ask); a dry run needs only the read scopes. An agent's change is refused while the project
is read-only for agents. Reading the config shows the sections the caller may read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import AsyncCursor
from psycopg import errors as pg_errors
from psycopg.rows import DictRow

from kilnbase import audit
from kilnbase.db.session import Database
from kilnbase.http.agent_scopes import read_only_refusal, scope_refusal
from kilnbase.http.errors import ApiError, require_admin_actor
from kilnbase.identity.actor import Actor
from kilnbase.identity.agent_keys import AgentKeys
from kilnbase.identity.principal import Access
from kilnbase.project_config.diff import acts, diff_config
from kilnbase.project_config.schema import Checks, auth_change, validate_config
from kilnbase.project_config.sections import AuthConfigStore, BucketStore

MODULE = "CONFIG"
#: The sections of a file, as agent keys' scopes name their feature groups.
SECTIONS = ("auth", "storage")
#: The config lock: one per database, whatever the process.
_LOCK = "select pg_advisory_xact_lock(hashtext('kilnbase.project_config'))"
#: How long an apply waits for another to finish before it is refused.
LOCK_WAIT = "30s"
_BODY_KEYS = ("config", "dry_run", "prune")


@dataclass(frozen=True)
class ApplyRequest:
    config: Any
    dry_run: bool = False
    prune: bool = False

    @classmethod
    def of(cls, body: Any) -> ApplyRequest:
        """InsForge's body, `{config, dry_run?, prune?}`; a field it does not have is refused."""
        if not isinstance(body, dict):
            raise _invalid("The request body must be a JSON object: {config, dry_run?, prune?}.")
        for key in body:
            if key not in _BODY_KEYS:
                raise _invalid(f"Unknown field {key!r}: the body takes config, dry_run and prune.")
        if "config" not in body:
            raise _invalid(
                "config is required: the project config as JSON (GET /api/config shows its shape)."
            )
        for flag in ("dry_run", "prune"):
            if not isinstance(body.get(flag, False), bool):
                raise _invalid(f"{flag} must be a boolean.")
        return cls(body["config"], body.get("dry_run", False), body.get("prune", False))


def _invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_INPUT", message, "Send {config: {...}, dry_run?: bool, prune?: bool}.")


class _DryRun(psycopg.Rollback):
    """Ends a dry run's transaction (or one with nothing to change): rolled back, the block left quietly."""


def _require(actor: Actor, sections: set[str], access: Access) -> None:
    """The caller's scopes reach `access` in each of `sections` (an agent key's; others reach everything)."""
    for section in SECTIONS:
        if section in sections and not actor.principal.allows(section, access):
            raise scope_refusal(section, access)


class ProjectConfig:
    def __init__(
        self,
        database: Database,
        agent_keys: AgentKeys,
        auth: AuthConfigStore,
        buckets: BucketStore,
        *,
        lock_wait: str = LOCK_WAIT,
    ) -> None:
        self.database = database
        #: How long an apply waits for the one before it (a Postgres interval: "30s").
        self.lock_wait = lock_wait
        self.agent_keys = agent_keys
        self.auth = auth
        self.buckets = buckets

    def _checks(self) -> Checks:
        return Checks(
            self.auth.access_token_seconds, self.auth.check_config_change, self.buckets.check_bucket_name
        )

    async def _live(self, cur: AsyncCursor[DictRow], sections: set[str]) -> dict[str, Any]:
        """The live config of `sections`, in the file's shape."""
        live: dict[str, Any] = {}
        if "auth" in sections:
            row = await self.auth.config_in(cur)
            live["auth"] = {
                "jwt_expiry": self.auth.access_token_seconds,
                "enable_signup": not row["disableSignup"],
                "additional_redirect_urls": list(row["allowedRedirectUrls"]),
            }
        if "storage" in sections:
            buckets = await self.buckets.buckets_in(cur)
            live["storage"] = {"buckets": {name: {"public": public} for name, public in buckets.items()}}
        return live

    async def read(self, actor: Actor) -> dict[str, Any]:
        """The live config, of the sections the caller may read (403 when it may read none)."""
        require_admin_actor(actor)
        readable = {section for section in SECTIONS if actor.principal.allows(section, "read")}
        if not readable:
            raise scope_refusal("auth", "read")
        async with self.database.as_owner() as cur:
            return await self._live(cur, readable)

    async def apply(self, actor: Actor, request: ApplyRequest) -> dict[str, Any]:
        """`{plan: {changes, summary}, applied}`: applied is false for a dry run and for a file that changes
        nothing."""
        details: dict[str, Any] = {"dryRun": request.dry_run, "prune": request.prune}
        async with audit.refusals(self.database, actor, "APPLY_CONFIG", MODULE, details):
            require_admin_actor(actor)
            file = validate_config(request.config, self._checks())
            named = {section for section in SECTIONS if section in file}
            _require(actor, named, "read")
            plan: dict[str, Any] = {}
            acting: list[dict[str, Any]] = []
            async with self.database.as_owner() as cur:
                await self._lock(cur)
                plan = diff_config(await self._live(cur, named), file, prune=request.prune)
                acting = [change for change in plan["changes"] if acts(change)]
                if not request.dry_run and acting:
                    self._require_writes(actor, acting)
                await self._carry_out(cur, actor, file, acting)
                details["summary"] = plan["summary"]
                if request.dry_run or not acting:
                    raise _DryRun()
                await audit.record(cur, actor, "APPLY_CONFIG", MODULE, details)
        return {"plan": plan, "applied": not request.dry_run and bool(acting)}

    async def _lock(self, cur: AsyncCursor[DictRow]) -> None:
        await cur.execute("select set_config('lock_timeout', %s, true)", (self.lock_wait,))
        try:
            await cur.execute(_LOCK)
        except pg_errors.LockNotAvailable:
            raise ApiError(
                409,
                "CONFLICT",
                f"Another config apply has held the project's config for over {self.lock_wait}.",
                "Apply again once it has finished.",
            ) from None

    def _require_writes(self, actor: Actor, acting: list[dict[str, Any]]) -> None:
        if actor.principal.agent is not None and self.agent_keys.read_only:
            raise read_only_refusal()
        _require(actor, {change["section"].split(".")[0] for change in acting}, "write")

    async def _carry_out(
        self, cur: AsyncCursor[DictRow], actor: Actor, file: Mapping[str, Any], acting: list[dict[str, Any]]
    ) -> None:
        """Each change, by the owning service's method: auth's in one update, then the buckets in plan
        order (adds, changes of public, removals)."""
        changed_auth = {
            change["key"]: file["auth"][change["key"]] for change in acting if change["section"] == "auth"
        }
        if changed_auth:
            await self.auth.update_config_in(cur, actor, auth_change(changed_auth))
        for change in acting:
            if change["section"] != "storage.buckets":
                continue
            if change["op"] == "add":
                await self.buckets.create_bucket_in(
                    cur, actor, change["key"], change["value"].get("public", False)
                )
            elif change["op"] == "modify":
                await self.buckets.update_bucket_in(cur, actor, change["key"], change["to"])
            else:
                await self.buckets.delete_empty_bucket_in(cur, actor, change["key"])
