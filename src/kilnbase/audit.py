"""The audit trail: every admin or agent action, recorded by the service that performs it.

A service records inside the transaction that makes the change (pass its cursor), so the entry commits or
rolls back with it; a refused or failed action is recorded on its own (pass the `Database`), with its outcome.
Every service records its refusals the same way, with `refusals`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

import orjson
from psycopg import AsyncCursor

from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError
from kilnbase.identity.actor import Actor

Outcome = Literal["success", "refused", "failed", "held"]

_INSERT = (
    "insert into system.audit_logs (actor, action, module, details, ip_address, user_agent, agent_key, tool, "
    "outcome) values (%s, %s, %s, %s::jsonb, %s::inet, %s, %s, %s, %s)"
)
_USER_AGENT_LIMIT = 512
#: The most of an error's message kept in an entry (a type check's output can run to pages).
_ERROR_LIMIT = 2000


async def record(
    target: Database | AsyncCursor[Any],
    actor: Actor,
    action: str,
    module: str,
    details: Mapping[str, Any] | None = None,
    *,
    outcome: Outcome = "success",
) -> None:
    """Append one entry: in the open transaction of `target` when it is a cursor, else in one of its own."""
    params = (
        actor.name,
        action,
        module,
        orjson.dumps(dict(details or {})).decode(),
        actor.ip,
        (actor.user_agent or "")[:_USER_AGENT_LIMIT] or None,
        actor.agent_key,
        actor.tool,
        outcome,
    )
    if isinstance(target, Database):
        async with target.as_owner() as cur:
            await cur.execute(_INSERT, params)
    else:
        await target.execute(_INSERT, params)


@contextlib.asynccontextmanager
async def refusals(
    database: Database, actor: Actor, action: str, module: str, details: Mapping[str, Any]
) -> AsyncIterator[None]:
    """Record `action` as refused when the block raises an `ApiError`, then let the error go on.

    The entry gets a transaction of its own, since the block's rolled back with the error; it holds `details`
    as they stand when the error is raised (a block may add to them as it learns more) and the error's
    message. An error that says the action was tried and failed (`ApiError.failed`: the database or a check
    of the code failed it) is recorded as failed. A success is the block's to record, inside its own
    transaction, so the entry commits with the change.
    """
    try:
        yield
    except ApiError as exc:
        entry = {**details, "error": exc.message[:_ERROR_LIMIT]}
        await record(database, actor, action, module, entry, outcome="failed" if exc.failed else "refused")
        raise


async def search(
    db: Database,
    *,
    limit: int,
    offset: int,
    actor: str | None = None,
    action: str | None = None,
    module: str | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """A page of entries, newest first, in InsForge's shape, and the total that match."""
    conditions = []
    params: list[Any] = []
    for column, value in (("actor", actor), ("action", action)):
        if value:
            conditions.append(f"{column} = %s")
            params.append(value)
    if module:  # in any case, as InsForge's dashboard and agents write it
        conditions.append("upper(module) = upper(%s)")
        params.append(module)
    if start_date:
        conditions.append("created_at >= %s::timestamptz")
        params.append(start_date)
    if end_date:
        conditions.append("created_at <= %s::timestamptz")
        params.append(end_date)
    where = ("where " + " and ".join(conditions)) if conditions else ""
    async with db.as_owner() as cur:
        await cur.execute(f"select count(*) as total from system.audit_logs {where}", params)
        total_row = await cur.fetchone()
        await cur.execute(
            "select id::text, actor, action, module, details, host(ip_address) as ip_address, user_agent, "
            "agent_key, tool, outcome, "
            "to_char(created_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') as created_at "
            f"from system.audit_logs {where} order by created_at desc limit %s offset %s",
            [*params, limit, offset],
        )
        rows = await cur.fetchall()
    total = int(total_row["total"]) if total_row else 0
    return [
        {
            "id": r["id"],
            "actor": r["actor"],
            "action": r["action"],
            "module": r["module"],
            "details": r["details"],
            "ipAddress": r["ip_address"],
            "userAgent": r["user_agent"],
            "agentKey": r["agent_key"],
            "tool": r["tool"],
            "outcome": r["outcome"],
            "createdAt": r["created_at"],
            "updatedAt": r["created_at"],  # (entries never change; InsForge's shape has the field)
        }
        for r in rows
    ], total
