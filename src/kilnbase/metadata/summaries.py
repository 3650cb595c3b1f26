"""What the capabilities beyond InsForge's metadata hold, summed up for an agent's first read: schedules,
database webhooks, database backups (the latest, and the schedule), the advisor's latest scan, the
key-value store's global namespaces, agent memory's scopes, the messaging outbox's counts and each Stripe
environment's state. Read on the owner pool from each
capability's tables (no capability is imported), one bounded query per section, in the transaction that
reads the rest of the project's state.

Each section belongs to the capability's feature group, and an agent key sees a section only with that
group's read scope (`sections.visible`, the rule every section of the metadata follows). A
section whose table is absent (agent memory is left out of a database without pgvector) answers empty, as a
capability that is not installed does in `project_state`; the table's presence is asked in the query that
asks for the others', so a missing one can never fail the whole call.

Never here: schedule headers (they hold credentials and `${{secrets.…}}` references), webhook secrets, any
URL but its host (a URL may carry credentials in its userinfo, query or path: a schedule pointed at this
server shows its path, which names the function it calls), KV values and memory content, message
recipients, subjects and bodies, and anything of Stripe's but whether it is connected (no key, account,
customer or amount).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from psycopg import AsyncCursor
from psycopg.rows import DictRow

from kilnbase.metadata.sections import (
    ADVISOR,
    BACKUPS,
    KV,
    MEMORY,
    MESSAGING,
    PAYMENTS,
    SCHEDULES,
    WEBHOOKS,
    Section,
)

#: The most schedules and webhooks listed (each section says how many there are in all).
MAX_LISTED = 100
#: The most KV namespaces and memory scopes listed, the largest first.
MAX_GROUPS = 50
#: A scan older than this is stale: the schema has likely changed since.
STALE_SCAN_HOURS = 24
#: The window of a webhook's recent failed delivery attempts.
FAILURE_WINDOW_HOURS = 24
#: The messages counted as sent lately: sent within this many hours.
RECENT_HOURS = 24


#: The summaries, each a section of the metadata whose table its capability creates.
SUMMARIES = (SCHEDULES, WEBHOOKS, BACKUPS, ADVISOR, KV, MEMORY, MESSAGING, PAYMENTS)
TABLES = tuple(section.table for section in SUMMARIES if section.table is not None)

_SCHEDULES = f"""
select j.name, j.cron_schedule, j.is_active, j.http_method, j.function_url, j.next_run_at,
       l.executed_at as last_run_at, l.success as last_success, l.status_code as last_status,
       (select count(*) from schedules.jobs)::int as total
from (select id, name, cron_schedule, is_active, http_method, function_url, next_run_at
      from schedules.jobs order by name, id limit {MAX_LISTED}) j
left join lateral (
    select executed_at, success, status_code from schedules.job_logs
    where job_id = j.id order by executed_at desc limit 1
) l on true
order by j.name, j.id
"""
_WEBHOOKS = f"""
select h.name, h.table_schema, h.table_name, h.events, h.url, h.has_secret, h.enabled,
       (select count(*) from database_webhooks.logs l
        where l.webhook_id = h.id and not l.success
          and l.delivered_at > now() - interval '{FAILURE_WINDOW_HOURS} hours')::int as recent_failures,
       (select count(*) from database_webhooks.hooks)::int as total
from (select id, name, table_schema, table_name, events, url, secret_ciphertext is not null as has_secret,
             enabled
      from database_webhooks.hooks order by table_schema, table_name, name, id limit {MAX_LISTED}) h
order by h.table_schema, h.table_name, h.name, h.id
"""
# Whether mail is going out: what waits, what is being sent, what went out lately, and what gave up.
_MESSAGING = f"""
select count(*) filter (where status = 'pending')::int as pending,
       count(*) filter (where status = 'claimed')::int as sending,
       count(*) filter (where status = 'sent'
                        and sent_at > now() - interval '{RECENT_HOURS} hours')::int as sent_recently,
       (select count(*) from messaging.dead_letter)::int as dead,
       min(next_attempt_at) filter (where status = 'pending') as next_attempt
from messaging.outbox
"""
# Whether payments can be taken, per provider and environment (never its keys, its account or its customers).
_PAYMENTS = """
select c.provider, c.environment, c.status, c.webhook_endpoint_id is not null as webhook_configured,
       c.last_synced_at,
       case when c.provider = 'stripe' then
            (select count(*) from payments.stripe_products p where p.environment = c.environment and p.active)
       else (select count(*) from payments.razorpay_plans p where p.environment = c.environment and p.active)
       end::int as products,
       case when c.provider = 'stripe' then
            (select count(*) from payments.stripe_subscriptions s
             where s.environment = c.environment and s.status in ('active', 'trialing'))
       else (select count(*) from payments.razorpay_subscriptions s
             where s.environment = c.environment and s.status in ('active', 'authenticated'))
       end::int as subscriptions
from payments.provider_connections c
order by c.provider desc, c.environment
"""
# Whether an agent can roll back: the newest completed backup, one under way, and the schedule.
_BACKUPS = """
select (select count(*) from system.database_backups where status = 'completed')::int as completed,
       (select max(completed_at) from system.database_backups where status = 'completed') as latest,
       exists (select 1 from system.database_backups where status = 'running') as running,
       c.backup_enabled as enabled, c.backup_cron_schedule as cron, c.backup_next_at as next_at
from system.database_config c
"""
# The latest scan, with the counts of the latest completed one less what is suppressed (as the advisor's own
# summary counts them).
_ADVISOR = f"""
with latest as (
    select status, scanned_at from system.advisor_scans order by scanned_at desc, id limit 1
), completed as (
    select id from system.advisor_scans where status = 'completed' order by scanned_at desc, id limit 1
), counted as (
    select f.severity, count(*)::int as n
    from system.advisor_findings f join completed c on f.scan_id = c.id
    where not exists (
        select 1 from system.advisor_suppressions s
        where s.rule_id = f.rule_id and (s.scope = 'rule' or s.affected_object = f.affected_object)
    )
    group by f.severity
)
select l.status, l.scanned_at, l.scanned_at < now() - interval '{STALE_SCAN_HOURS} hours' as stale,
       coalesce((select jsonb_object_agg(severity, n) from counted), '{{}}') as counts
from latest l
"""
_KV = f"""
select namespace, count(*)::int as keys, count(*) over ()::int as total
from kv.entries where owner_id is null and (expires_at is null or expires_at > now())
group by namespace order by keys desc, namespace limit {MAX_GROUPS}
"""
_MEMORY = f"""
select scope, count(*)::int as memories, count(*) over ()::int as total
from memory.memories group by scope order by memories desc, scope limit {MAX_GROUPS}
"""
_SEVERITIES = ("critical", "warning", "info")
_SCAN_HINT = "Run `run-advisor-scan` (POST /api/advisor/scan) before you finish"
_NO_SCAN_HINT = (
    f"No scan yet. {_SCAN_HINT}: it names tables left without RLS or with policies open to everyone."
)


def url_host(url: str) -> str | None:
    """A URL's host (and port, when one is given): never its userinfo, path or query."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


def schedule_target(url: str) -> str | None:
    """Where a schedule calls: the path of one on this server (`/functions/report`), else the host."""
    if url.startswith("/"):
        return url.split("?", 1)[0].split("#", 1)[0]
    return url_host(url)


def _iso(moment: Any) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


async def _schedules(cur: AsyncCursor[DictRow]) -> dict[str, Any]:
    await cur.execute(_SCHEDULES)
    rows = await cur.fetchall()
    return {
        "total": rows[0]["total"] if rows else 0,
        "jobs": [
            {
                "name": row["name"],
                "cronSchedule": row["cron_schedule"],
                "isActive": row["is_active"],
                "httpMethod": row["http_method"],
                "target": schedule_target(row["function_url"]),
                "nextRunAt": _iso(row["next_run_at"]),
                "lastRun": None
                if row["last_run_at"] is None
                else {
                    "at": _iso(row["last_run_at"]),
                    "success": row["last_success"],
                    "statusCode": row["last_status"],
                },
            }
            for row in rows
        ],
    }


def _table_label(schema: str, table: str) -> str:
    return table if schema == "public" else f"{schema}.{table}"


async def _webhooks(cur: AsyncCursor[DictRow]) -> dict[str, Any]:
    await cur.execute(_WEBHOOKS)
    rows = await cur.fetchall()
    return {
        "total": rows[0]["total"] if rows else 0,
        "webhooks": [
            {
                "name": row["name"],
                "tableName": _table_label(row["table_schema"], row["table_name"]),
                "events": list(row["events"]),
                "enabled": row["enabled"],
                "urlHost": url_host(row["url"]),
                "hasSecret": row["has_secret"],
                "recentFailures": row["recent_failures"],
            }
            for row in rows
        ],
        "recentFailuresWindowHours": FAILURE_WINDOW_HOURS,
    }


async def _backups(cur: AsyncCursor[DictRow]) -> dict[str, Any]:
    await cur.execute(_BACKUPS)
    row = await cur.fetchone()
    if row is None:
        return _empty(BACKUPS)
    return {
        "completed": row["completed"],
        "latestCompletedAt": _iso(row["latest"]),
        "running": row["running"],
        "schedule": {
            "enabled": row["enabled"],
            "cronSchedule": row["cron"],
            "nextBackupAt": _iso(row["next_at"]),
        },
    }


async def _advisor(cur: AsyncCursor[DictRow]) -> dict[str, Any]:
    await cur.execute(_ADVISOR)
    row = await cur.fetchone()
    if row is None:
        return {"latestScan": None, "hint": _NO_SCAN_HINT}
    counts = {level: row["counts"].get(level, 0) for level in _SEVERITIES}
    hint = None
    if row["status"] == "failed":
        hint = f"The latest scan failed. {_SCAN_HINT}."
    elif row["stale"]:
        hint = f"The latest scan is over {STALE_SCAN_HOURS} hours old. {_SCAN_HINT}."
    return {
        "latestScan": {
            "status": row["status"],
            "scannedAt": _iso(row["scanned_at"]),
            "summary": {"total": sum(counts.values()), **counts},
        },
        "hint": hint,
    }


async def _kv(cur: AsyncCursor[DictRow]) -> dict[str, Any]:
    await cur.execute(_KV)
    rows = await cur.fetchall()
    return {
        "totalNamespaces": rows[0]["total"] if rows else 0,
        "namespaces": [{"namespace": row["namespace"], "keys": row["keys"]} for row in rows],
    }


async def _memory(cur: AsyncCursor[DictRow]) -> dict[str, Any]:
    await cur.execute(_MEMORY)
    rows = await cur.fetchall()
    return {
        "totalScopes": rows[0]["total"] if rows else 0,
        "scopes": [{"scope": row["scope"], "memories": row["memories"]} for row in rows],
    }


async def _messaging(cur: AsyncCursor[DictRow]) -> dict[str, Any]:
    await cur.execute(_MESSAGING)
    row = await cur.fetchone()
    if row is None:
        return _empty(MESSAGING)
    return {
        "pending": row["pending"],
        "sending": row["sending"],
        "sentRecently": row["sent_recently"],
        "deadLetters": row["dead"],
        "nextAttemptAt": _iso(row["next_attempt"]),
        "recentWindowHours": RECENT_HOURS,
    }


async def _payments(cur: AsyncCursor[DictRow]) -> dict[str, Any]:
    """Each provider's environments: Stripe's active products, Razorpay's active plans."""
    await cur.execute(_PAYMENTS)
    found: dict[str, list[dict[str, Any]]] = {"stripe": [], "razorpay": []}
    for row in await cur.fetchall():
        catalog = "activeProducts" if row["provider"] == "stripe" else "activePlans"
        found[row["provider"]].append(
            {
                "environment": row["environment"],
                "status": row["status"],
                "webhookConfigured": row["webhook_configured"],
                "lastSyncedAt": _iso(row["last_synced_at"]),
                catalog: row["products"],
                "activeSubscriptions": row["subscriptions"],
            }
        )
    return found


_READERS = {
    SCHEDULES.key: _schedules,
    WEBHOOKS.key: _webhooks,
    BACKUPS.key: _backups,
    ADVISOR.key: _advisor,
    KV.key: _kv,
    MEMORY.key: _memory,
    MESSAGING.key: _messaging,
    PAYMENTS.key: _payments,
}


def _empty(section: Section) -> dict[str, Any]:
    """A section whose table this database does not have."""
    if section is SCHEDULES:
        return {"total": 0, "jobs": []}
    if section is WEBHOOKS:
        return {"total": 0, "webhooks": [], "recentFailuresWindowHours": FAILURE_WINDOW_HOURS}
    if section is BACKUPS:
        return {"completed": 0, "latestCompletedAt": None, "running": False, "schedule": None}
    if section is ADVISOR:
        return {"latestScan": None, "hint": None}
    if section is KV:
        return {"totalNamespaces": 0, "namespaces": []}
    if section is MESSAGING:
        return {
            "pending": 0,
            "sending": 0,
            "sentRecently": 0,
            "deadLetters": 0,
            "nextAttemptAt": None,
            "recentWindowHours": RECENT_HOURS,
        }
    if section is PAYMENTS:
        return {"stripe": [], "razorpay": []}
    return {"totalScopes": 0, "scopes": []}


async def read(
    cur: AsyncCursor[DictRow], sections: Iterable[Section], installed: set[str]
) -> dict[str, dict[str, Any]]:
    """Each summary among `sections`, by its JSON key: read when its table exists, else empty."""
    return {
        section.key: await _READERS[section.key](cur) if section.table in installed else _empty(section)
        for section in sections
        if section in SUMMARIES
    }
