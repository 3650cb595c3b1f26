"""The service behind `/api/kv`: get, list, ttl, set (and set-if-absent), delete, incr and decr,
compare-and-swap, expire, mget and mset, and the prune of expired entries.

Contract from InsForge (`routes/kv/index.routes.ts`, `services/kv/kv.service.ts`, `kv-api.schema.ts`). Who
addresses which entries, as there:

- The API key, admins and agent keys (`project_admin`) manage the project-global store (entries with no
  owner). Their calls run as the owner, and each change is audited (module `KV`, the namespace and key,
  never the value), a refused one too.
- A signed-in user addresses their own entries. The call runs as the caller (`authenticated`, with their
  claims) on the request pool, so Row Level Security decides (migration 0250): a user can neither read nor
  change another's entry, whatever the SQL asked. End users' writes are not audited: an app's counters and
  caches would flood the trail, and they are the user's own data, not the project's configuration.
- The anon key addresses the project-global store as `anon`, which RLS lets read only `public` entries and
  write nothing (a 403).

An entry past its expiry is absent at once for every read and write (each statement filters on it); the
server's background work deletes such entries every minute (`pruning`). Writes that create an entry first
delete an expired one of the same key in the same transaction, so a setnx, an incr or an mset on an expired
key starts afresh (`created: true`, a counter from 0), where InsForge's would find the stale row.

Every change is one statement that Postgres makes atomic: the upsert of set and incr (`INSERT ... ON CONFLICT
... DO UPDATE`, the row locked and its latest value used), the conditional UPDATE of cas. Only a failed incr
or cas reads once more, in the same transaction, to tell a missing key from a mismatch.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import AsyncCursor
from psycopg.rows import DictRow

from kilnbase import audit
from kilnbase.config import KvSettings
from kilnbase.db.periodic import repeating
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError
from kilnbase.identity.actor import Actor
from kilnbase.kv.definitions import (
    DEFAULT_TTL_SECONDS,
    MAX_LISTED,
    MAX_NUMBER,
    CasRequest,
    ExpireRequest,
    IncrRequest,
    MgetRequest,
    MsetRequest,
    SetRequest,
    checked,
    expiry_given,
    serialized,
)

log = logging.getLogger("kilnbase.kv")

MODULE = "KV"
#: The prune: a minute after start, then every minute; at most this many rows per statement.
PRUNE_FIRST_SECONDS = 60.0
PRUNE_SECONDS = 60.0
PRUNE_BATCH = 10_000

_ISO = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'
_LIVE = "(e.expires_at is null or e.expires_at > now())"
_EXPIRY = "case when %(ttl)s::int is null then null else now() + make_interval(secs => %(ttl)s::int) end"
_ENTRY = (
    "e.namespace, e.key, e.value::text as value, e.visibility, "
    f"to_char(e.expires_at at time zone 'UTC', '{_ISO}') as \"expiresAt\", "
    f"to_char(e.created_at at time zone 'UTC', '{_ISO}') as \"createdAt\", "
    f"to_char(e.updated_at at time zone 'UTC', '{_ISO}') as \"updatedAt\""
)


@dataclass(frozen=True)
class _Statements:
    """Every statement, for one kind of owner: the caller (`auth.uid()`) or the project-global store
    (no owner). Built once from these two fixed fragments; nothing a client sends becomes SQL text."""

    get: str
    ttl: str
    list: str
    mget: str
    drop_expired: str
    set: str
    set_if_absent: str
    delete: str
    incr: str
    number_at: str
    cas: str
    exists: str
    expire: str
    drop_expired_many: str
    mset: str

    @classmethod
    def of(cls, owner: str, mine: str) -> _Statements:
        key = f"e.namespace = %(namespace)s and e.key = %(key)s and {mine}"
        insert = (
            "insert into kv.entries as e (owner_id, namespace, key, value, visibility, expires_at) "
            f"values ({owner}, %(namespace)s, %(key)s, %(value)s::jsonb, %(visibility)s, {_EXPIRY}) "
            "on conflict (owner_id, namespace, key) do "
        )
        overwrite = (
            "update set value = excluded.value, visibility = excluded.visibility, "
            "expires_at = excluded.expires_at, updated_at = now() "
        )
        keep_or_set_expiry = f"case when %(set_expiry)s then {_EXPIRY} else e.expires_at end"
        return cls(
            get=f"select e.value::text as value from kv.entries e where {key} and {_LIVE}",
            ttl=(
                "select floor(extract(epoch from e.expires_at - now()))::bigint as ttl "
                f"from kv.entries e where {key} and {_LIVE}"
            ),
            list=(
                "select e.key, e.visibility, "
                f"to_char(e.expires_at at time zone 'UTC', '{_ISO}') as \"expiresAt\", "
                f"to_char(e.updated_at at time zone 'UTC', '{_ISO}') as \"updatedAt\" "
                f"from kv.entries e where e.namespace = %(namespace)s and {mine} and {_LIVE} "
                "and (%(after)s::text is null or e.key > %(after)s) order by e.key limit %(limit)s"
            ),
            mget=(
                "select e.key, e.value::text as value from kv.entries e "
                f"where e.namespace = %(namespace)s and e.key = any(%(keys)s::text[]) and {mine} and {_LIVE} "
                "order by e.key"
            ),
            drop_expired=f"delete from kv.entries e where {key} and e.expires_at <= now()",
            set=f"{insert}{overwrite}returning (e.xmax = 0) as created, {_ENTRY}",
            set_if_absent=f"{insert}nothing returning true as created, {_ENTRY}",
            delete=(
                f"with gone as (delete from kv.entries e where {key} returning {_LIVE} as live) "
                "select coalesce(bool_or(live), false) as deleted from gone"
            ),
            incr=(
                "insert into kv.entries as e (owner_id, namespace, key, value, visibility, expires_at) "
                f"values ({owner}, %(namespace)s, %(key)s, to_jsonb(%(by)s::numeric), 'private', {_EXPIRY}) "
                "on conflict (owner_id, namespace, key) do update "
                "set value = to_jsonb(kv.number_of(e.value) + %(by)s::numeric), "
                f"expires_at = {keep_or_set_expiry}, updated_at = now() "
                "where abs(kv.number_of(e.value) + %(by)s::numeric) <= %(max)s::numeric "
                "returning e.value::text as value"
            ),
            number_at=(
                "select kv.number_of(e.value) is not null as is_number "
                f"from kv.entries e where {key} and {_LIVE}"
            ),
            cas=(
                "update kv.entries e set value = %(next)s::jsonb, "
                f"expires_at = {keep_or_set_expiry}, updated_at = now() "
                f"where {key} and {_LIVE} and e.value = %(expected)s::jsonb returning {_ENTRY}"
            ),
            exists=f"select 1 as present from kv.entries e where {key} and {_LIVE}",
            expire=(
                f"update kv.entries e set expires_at = {_EXPIRY}, updated_at = now() "
                f"where {key} and {_LIVE} returning 1 as updated"
            ),
            drop_expired_many=(
                "delete from kv.entries e where e.namespace = %(namespace)s "
                f"and e.key = any(%(keys)s::text[]) and {mine} and e.expires_at <= now()"
            ),
            mset=(
                "with written as ("
                "insert into kv.entries as e (owner_id, namespace, key, value, visibility, expires_at) "
                f"select {owner}, %(namespace)s, k, v::jsonb, %(visibility)s, {_EXPIRY} "
                "from unnest(%(keys)s::text[], %(values)s::text[]) as given (k, v) "
                f"on conflict (owner_id, namespace, key) do {overwrite}returning 1) "
                "select count(*) as count from written"
            ),
        )


#: The caller's own entries (a signed-in user), and the project-global store (admins, the anon key).
_OWN = _Statements.of("(select auth.uid())", "e.owner_id = (select auth.uid())")
_GLOBAL = _Statements.of("null", "e.owner_id is null")

_PRUNE = "delete from kv.entries where id in (select id from kv.entries where expires_at <= now() limit %s)"


def not_found(namespace: str, key: str) -> ApiError:
    return ApiError(
        404,
        "KV_NOT_FOUND",
        f"Key not found: {namespace}/{key}",
        "Check the namespace and key (GET /api/kv/entries/:namespace lists the keys); an entry past its "
        "TTL is gone.",
    )


def _forbidden(actor: Actor) -> ApiError:
    if actor.principal.db_role == "anon":
        message = "The anon key may only read public entries of the key-value store."
        fix = "Sign the user in and send their access token to write their own entries."
    else:
        message = "This credential may not change that entry of the key-value store."
        fix = "A signed-in user changes only their own entries; use the API key for the project's."
    return ApiError(403, "FORBIDDEN", message, fix)


def _value(text: str | None) -> Any:
    """A stored value, from the JSON text Postgres wrote. A number beyond a double (written by SQL, never
    through this API) is read as JavaScript reads it, not refused."""
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text, parse_int=float, parse_float=float)


def _entry(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "namespace": row["namespace"],
        "key": row["key"],
        "value": _value(row["value"]),
        "visibility": row["visibility"],
        "expiresAt": row["expiresAt"],
        "createdAt": row["createdAt"],
        "updatedAt": row["updatedAt"],
    }


def _decimal(number: int | float) -> str:
    """A number as Postgres's numeric reads it, exactly (a float's shortest repr)."""
    return repr(number)


class KvStore:
    def __init__(self, database: Database, settings: KvSettings) -> None:
        self._database = database
        self._max_user_entries = str(settings.max_user_entries)

    # --- sessions ---------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _session(
        self, actor: Actor, *, read_only: bool = False
    ) -> AsyncIterator[tuple[AsyncCursor[DictRow], _Statements]]:
        """A transaction for the actor's call and the statements for its entries: as the owner for admins
        (the project-global store), else as the caller, whom RLS holds to what InsForge's policies allow."""
        if actor.is_admin:
            async with self._database.as_owner() as cur:
                yield cur, _GLOBAL
            return
        statements = _OWN if actor.principal.db_role == "authenticated" else _GLOBAL
        try:
            async with self._database.as_caller(actor.principal, read_only=read_only) as cur:
                if not read_only:  # (the bound `kv.bound_user_entries` holds a user's entries to)
                    await cur.execute(
                        "select set_config('kilnbase.kv_max_user_entries', %s, true)",
                        (self._max_user_entries,),
                    )
                yield cur, statements
        except psycopg.errors.InsufficientPrivilege:
            raise _forbidden(actor) from None
        except psycopg.errors.ProgramLimitExceeded as exc:
            if not str(exc).startswith("kilnbase.kv:"):
                raise
            raise ApiError(
                409,
                "KV_LIMIT_EXCEEDED",
                f"This user already holds {self._max_user_entries} entries, the most one user may hold.",
                "Delete entries the user no longer needs, or give them a TTL; the project's own entries "
                "(the API key's) are not counted.",
            ) from None

    def _refusals(self, actor: Actor, action: str, details: dict[str, Any]) -> Any:
        """Admins' refused changes are audited; end users' calls are not (see the module's docstring)."""
        if actor.is_admin:
            return audit.refusals(self._database, actor, action, MODULE, details)
        return contextlib.nullcontext()

    @staticmethod
    async def _record(
        cur: AsyncCursor[DictRow], actor: Actor, action: str, details: Mapping[str, Any]
    ) -> None:
        if actor.is_admin:
            await audit.record(cur, actor, action, MODULE, details)

    # --- reads ------------------------------------------------------------------------------------------

    async def get(self, actor: Actor, namespace: str, key: str) -> Any:
        """The value; 404 when the key is absent (or expired, or not the caller's to see)."""
        async with self._session(actor, read_only=True) as (cur, sql):
            await cur.execute(sql.get, {"namespace": namespace, "key": key})
            row = await cur.fetchone()
        if row is None:
            raise not_found(namespace, key)
        return _value(row["value"])

    async def ttl(self, actor: Actor, namespace: str, key: str) -> int | None:
        """Whole seconds until the entry expires (null: never); 404 when absent."""
        async with self._session(actor, read_only=True) as (cur, sql):
            await cur.execute(sql.ttl, {"namespace": namespace, "key": key})
            row = await cur.fetchone()
        if row is None:
            raise not_found(namespace, key)
        ttl: int | None = row["ttl"]
        return ttl

    async def list(
        self, actor: Actor, namespace: str, *, after: str | None = None, limit: int = MAX_LISTED
    ) -> list[dict[str, Any]]:
        """The namespace's live keys in key order, at most `limit`, from after `after`."""
        params = {"namespace": namespace, "after": after, "limit": limit}
        async with self._session(actor, read_only=True) as (cur, sql):
            await cur.execute(sql.list, params)
            rows = await cur.fetchall()
        return [dict(row) for row in rows]

    async def mget(self, actor: Actor, body: Any) -> dict[str, Any]:
        """`{key: value}` for the keys that are there; absent and expired keys are left out."""
        request = checked(MgetRequest, body)
        params = {"namespace": request.namespace, "keys": request.keys}
        async with self._session(actor, read_only=True) as (cur, sql):
            await cur.execute(sql.mget, params)
            rows = await cur.fetchall()
        return {row["key"]: _value(row["value"]) for row in rows}

    # --- writes -----------------------------------------------------------------------------------------

    async def set(self, actor: Actor, namespace: str, key: str, body: Any) -> dict[str, Any]:
        """Write the entry (value, visibility and expiry all replaced); with `ifNotExists` only when the key
        is absent: `{created: false, entry: null}` when it is there, never an error (InsForge's 200)."""
        details: dict[str, Any] = {"namespace": namespace, "key": key}
        async with self._refusals(actor, "SET_KV_ENTRY", details):
            request = checked(SetRequest, body)
            details["ifNotExists"] = request.ifNotExists
            params = {
                "namespace": namespace,
                "key": key,
                "value": serialized(request.value),
                "visibility": request.visibility,
                "ttl": request.ttl if expiry_given(request) else DEFAULT_TTL_SECONDS,
            }
            async with self._session(actor) as (cur, sql):
                await cur.execute(sql.drop_expired, params)
                await cur.execute(sql.set_if_absent if request.ifNotExists else sql.set, params)
                row = await cur.fetchone()
                details["created"] = row is not None and bool(row["created"])
                await self._record(cur, actor, "SET_KV_ENTRY", details)
        if row is None:
            return {"created": False, "entry": None}
        return {"created": bool(row["created"]), "entry": _entry(row)}

    async def mset(self, actor: Actor, body: Any) -> int:
        """Write every entry of `entries` in one statement (all or none), with one visibility and expiry;
        how many were written."""
        details: dict[str, Any] = {}
        async with self._refusals(actor, "SET_KV_ENTRIES", details):
            request = checked(MsetRequest, body)
            details.update(namespace=request.namespace, keys=list(request.entries)[:20])
            values = [serialized(value) for value in request.entries.values()]
            if not values:
                return 0
            params = {
                "namespace": request.namespace,
                "keys": list(request.entries),
                "values": values,
                "visibility": request.visibility,
                "ttl": request.ttl if expiry_given(request) else DEFAULT_TTL_SECONDS,
            }
            async with self._session(actor) as (cur, sql):
                await cur.execute(sql.drop_expired_many, params)
                await cur.execute(sql.mset, params)
                row = await cur.fetchone()
                assert row is not None
                details["count"] = row["count"]
                await self._record(cur, actor, "SET_KV_ENTRIES", details)
        count: int = row["count"]
        return count

    async def delete(self, actor: Actor, namespace: str, key: str) -> bool:
        """Whether a live entry was deleted (false when absent or expired: not an error)."""
        details: dict[str, Any] = {"namespace": namespace, "key": key}
        async with self._refusals(actor, "DELETE_KV_ENTRY", details), self._session(actor) as (cur, sql):
            await cur.execute(sql.delete, details)
            row = await cur.fetchone()
            deleted = row is not None and bool(row["deleted"])
            await self._record(cur, actor, "DELETE_KV_ENTRY", {**details, "deleted": deleted})
        return deleted

    async def incr(self, actor: Actor, namespace: str, key: str, body: Any, *, sign: int = 1) -> Any:
        """Add `by` (`sign` -1: subtract it) to the number at the key, atomically; a missing key starts from
        0 (a private entry, expiring in 30 days unless `ttl` says otherwise). The new value."""
        action = "INCREMENT_KV_VALUE" if sign > 0 else "DECREMENT_KV_VALUE"
        details: dict[str, Any] = {"namespace": namespace, "key": key}
        async with self._refusals(actor, action, details):
            request = checked(IncrRequest, body)
            details["by"] = request.by
            given = expiry_given(request)
            params = {
                "namespace": namespace,
                "key": key,
                "by": _decimal(sign * request.by),
                "max": _decimal(MAX_NUMBER),
                "ttl": request.ttl if given else DEFAULT_TTL_SECONDS,
                "set_expiry": given,
            }
            async with self._session(actor) as (cur, sql):
                await cur.execute(sql.drop_expired, params)
                await cur.execute(sql.incr, params)
                row = await cur.fetchone()
                if row is None:
                    await cur.execute(sql.number_at, params)
                    found = await cur.fetchone()
                    raise self._not_counted(namespace, key, found is not None and found["is_number"])
                await self._record(cur, actor, action, details)
        return _value(row["value"])

    @staticmethod
    def _not_counted(namespace: str, key: str, is_number: bool) -> ApiError:
        if not is_number:
            return ApiError(
                400,
                "KV_NOT_A_NUMBER",
                f"Value at {namespace}/{key} is not a number",
                "Increment only a key that holds a JSON number (or delete it first).",
            )
        return ApiError(
            400,
            "INVALID_INPUT",
            f"Value at {namespace}/{key} would leave the range of a JSON number",
            f"Keep counters within ±{MAX_NUMBER:g}.",
        )

    async def cas(self, actor: Actor, namespace: str, key: str, body: Any) -> dict[str, Any]:
        """Replace the value with `next` only if it equals `expected` (JSON equality): the entry; 409
        `KV_CAS_MISMATCH` when it differs, 404 when the key is absent."""
        details: dict[str, Any] = {"namespace": namespace, "key": key}
        async with self._refusals(actor, "COMPARE_AND_SWAP_KV_ENTRY", details):
            request = checked(CasRequest, body)
            given = expiry_given(request)
            params = {
                "namespace": namespace,
                "key": key,
                "next": serialized(request.next),
                "expected": orjson.dumps(request.expected).decode(),
                "ttl": request.ttl if given else None,
                "set_expiry": given,
            }
            async with self._session(actor) as (cur, sql):
                await cur.execute(sql.cas, params)
                row = await cur.fetchone()
                if row is None:
                    await cur.execute(sql.exists, params)
                    if await cur.fetchone() is None:
                        raise not_found(namespace, key)
                    raise ApiError(
                        409,
                        "KV_CAS_MISMATCH",
                        "Compare-and-swap failed: current value does not match expected",
                        "Read the current value (GET the entry) and retry with it as `expected`.",
                    )
                await self._record(cur, actor, "COMPARE_AND_SWAP_KV_ENTRY", details)
        return _entry(row)

    async def expire(self, actor: Actor, namespace: str, key: str, body: Any) -> bool:
        """Set the entry's TTL (null: never expires) without touching its value; 404 when absent."""
        details: dict[str, Any] = {"namespace": namespace, "key": key}
        async with self._refusals(actor, "EXPIRE_KV_ENTRY", details):
            request = checked(ExpireRequest, body)
            details["ttl"] = request.ttl
            params = {"namespace": namespace, "key": key, "ttl": request.ttl}
            async with self._session(actor) as (cur, sql):
                await cur.execute(sql.expire, params)
                if await cur.fetchone() is None:
                    raise not_found(namespace, key)
                await self._record(cur, actor, "EXPIRE_KV_ENTRY", details)
        return True

    # --- the prune --------------------------------------------------------------------------------------

    async def prune_expired(self) -> int:
        """Delete every expired entry, of every owner, in batches; how many."""
        return await self._database.delete_in_batches(_PRUNE, batch=PRUNE_BATCH)

    def pruning(self) -> contextlib.AbstractAsyncContextManager[None]:
        """The server's background work: expired entries pruned every minute while it runs."""
        return repeating(
            self.prune_expired,
            first=PRUNE_FIRST_SECONDS,
            every=PRUNE_SECONDS,
            what="expired key-value entries",
            log=log,
        )
