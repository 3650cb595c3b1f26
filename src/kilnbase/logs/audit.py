"""The audit trail: one function every capability calls to record an admin or agent action."""

from __future__ import annotations

from typing import Any

import orjson
from psycopg import AsyncCursor

from kilnbase.db.session import Database

_INSERT = (
    "insert into system.audit_logs (actor, action, module, details, ip_address) "
    "values (%s, %s, %s, %s::jsonb, %s::inet)"
)


async def record(
    db: Database | AsyncCursor[Any],
    *,
    actor: str,
    action: str,
    module: str,
    details: dict[str, Any] | None = None,
    ip: str | None = None,
) -> None:
    """Append one entry. Pass the cursor of an open transaction to commit it together with the change."""
    params = (actor, action, module, orjson.dumps(details or {}).decode(), ip)
    if isinstance(db, Database):
        async with db.as_owner() as cur:
            await cur.execute(_INSERT, params)
    else:
        await db.execute(_INSERT, params)


async def query(
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
    conditions = []
    params: list[Any] = []
    for column, value in (("actor", actor), ("action", action), ("module", module)):
        if value:
            conditions.append(f"{column} = %s")
            params.append(value)
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
            "select id::text, actor, action, module, details, host(ip_address) as ip_address, "
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
            "createdAt": r["created_at"],
        }
        for r in rows
    ], total
