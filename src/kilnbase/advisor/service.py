"""The service behind `/api/advisor` (admin): scans of the app's database, their findings, and suppressions.

Shapes, codes and messages are InsForge's (`backend/src/api/routes/advisor`,
`services/database/database-advisor.service.ts`, `types/advisor.ts`): a finding is `{id, ruleId,
severity, category, title, description, affectedObject?, recommendation?}`; the latest scan is `{scanId,
status, scanType, scannedAt, errorMessage, summary: {total, critical, warning, info}}`, its counts from the
latest completed scan less what is suppressed; a suppression is `{id, ruleId, affectedObject?, scope,
reason, note?, createdBy?, createdAt}`. A second scan while one runs is 409.

A scan runs the rules (`rules.py`) as the owner, each under a statement timeout and in a savepoint of its own,
so a rule that fails or times out is reported in `errorMessage` and the others still count. InsForge answers
at once and scans in the background; Kilnbase scans before answering (a scan takes well under a second on an
ordinary project), so the answer already holds the result. slow-query needs pg_stat_statements; without it the
rule is skipped, and the scan says so (`skippedRules`). The last `KEPT_SCANS` scans are kept.

Every scan and every suppression made or removed, and every refused one, is audited (module `ADVISOR`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import AsyncCursor, sql
from psycopg.types.json import Jsonb

from kilnbase import audit
from kilnbase.advisor.rules import CATEGORIES, RULE_IDS, RULES, SEVERITIES, SLOW_QUERY, slow_query_sql
from kilnbase.config import AdvisorSettings
from kilnbase.db.schema_cache import HIDDEN_SCHEMAS
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError, require_admin_actor
from kilnbase.identity.actor import Actor

log = logging.getLogger("kilnbase.advisor")

MODULE = "ADVISOR"
DEFAULT_ISSUE_LIMIT = 50
MAX_ISSUE_LIMIT = 1000
MAX_ISSUE_OFFSET = 10_000_000
#: The most findings one rule reports in a scan.
MAX_FINDINGS_PER_RULE = 1000
#: The most suppressions kept (and listed).
MAX_SUPPRESSIONS = 1000
#: Scans kept, newest first; older ones go, with their findings, when a scan is saved.
KEPT_SCANS = 50
SCOPES = ("instance", "rule")
REASONS = ("false_positive", "accepted_risk", "wont_fix", "other")
#: The advisory lock key InsForge takes for a scan (held here for the scan's transaction).
_LOCK = (14589230, 1)
_ISO = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'
_NOT_SUPPRESSED = (
    "not exists (select 1 from system.advisor_suppressions s where s.rule_id = f.rule_id "
    "and (s.scope = 'rule' or s.affected_object = f.affected_object))"
)
_LATEST_COMPLETED = (
    "select id from system.advisor_scans where status = 'completed' order by scanned_at desc, id limit 1"
)
_SUPPRESSION_FIELDS = ("ruleId", "affectedObject", "scope", "reason", "note")
_LIST_HINT = (
    "List the findings with GET /api/advisor/issues; the suppressions with GET /api/advisor/suppressions."
)


def invalid(message: str) -> ApiError:
    return ApiError(
        400, "INVALID_INPUT", message, "Fix the value the message names and send the request again."
    )


def _iso(column: str) -> str:
    return f"to_char({column} at time zone 'UTC', '{_ISO}')"


class Advisor:
    def __init__(self, database: Database, settings: AdvisorSettings) -> None:
        self._database = database
        self._settings = settings

    # Scans

    async def scan(self, actor: Actor) -> dict[str, Any]:
        """Run every rule now and keep what they found: `{scanId, message, status, scanType, scannedAt,
        errorMessage, skippedRules, summary}`."""
        details: dict[str, Any] = {}
        async with audit.refusals(self._database, actor, "RUN_ADVISOR_SCAN", MODULE, details):
            require_admin_actor(actor)
            async with self._database.as_owner() as cur:
                await cur.execute("select pg_try_advisory_xact_lock(%s, %s) as acquired", _LOCK)
                row = await cur.fetchone()
                if row is None or not row["acquired"]:
                    raise ApiError(
                        409,
                        "DATABASE_CONSTRAINT_VIOLATION",
                        "A database advisor scan is already in progress.",
                        "Wait for it to finish, then read it with GET /api/advisor/latest.",
                    )
                findings, failed, skipped = await self._run_rules(cur)
                status = "failed" if failed and len(failed) == len(RULE_IDS) - len(skipped) else "completed"
                error = _error_message(failed, len(RULE_IDS) - len(skipped))
                scan_id = await _save(cur, findings, status, error, skipped)
                details.update(scanId=scan_id, status=status, findings=len(findings), failedRules=failed)
                await audit.record(cur, actor, "RUN_ADVISOR_SCAN", MODULE, details)
        latest = await self.latest(actor)
        assert latest is not None
        return {**latest, "message": "Scan completed" if status == "completed" else "Scan failed"}

    async def _run_rules(
        self, cur: AsyncCursor[Any]
    ) -> tuple[list[dict[str, Any]], list[str], list[dict[str, str]]]:
        """Every rule's findings, the rules that failed, and those skipped (with why)."""
        timeout = f"{int(self._settings.statement_timeout_seconds * 1000)}ms"
        await cur.execute("select set_config('statement_timeout', %s, true)", (timeout,))
        await cur.execute("set local lock_timeout = '5s'")
        params = {
            "hidden": list(HIDDEN_SCHEMAS),
            "activity_seconds": self._settings.activity_threshold_seconds,
            "most": MAX_FINDINGS_PER_RULE,
        }
        findings: list[dict[str, Any]] = []
        failed: list[str] = []
        skipped: list[dict[str, str]] = []
        queries: list[tuple[str, str, sql.Composed | str]] = [(r.id, r.category, r.sql) for r in RULES]
        view, reason = await _statements_view(cur)
        if view is None:
            skipped.append({"ruleId": SLOW_QUERY, "reason": reason})
        else:
            queries.append((SLOW_QUERY, "performance", sql.SQL(slow_query_sql("{}")).format(view)))
        conn = cur.connection
        for rule_id, category, query in queries:
            try:
                async with conn.transaction():  # (a savepoint: a failed rule leaves the scan going)
                    await cur.execute(query, params if isinstance(query, str) else None)
                    rows = await cur.fetchall()
            except (
                psycopg.errors.ObjectNotInPrerequisiteState
            ) as exc:  # (pg_stat_statements' library not loaded)
                skipped.append({"ruleId": rule_id, "reason": str(exc).strip()[:500]})
                continue
            except psycopg.Error as exc:
                log.warning("advisor rule %s failed: %s", rule_id, exc)
                failed.append(rule_id)
                continue
            findings += [{**row, "rule_id": rule_id, "category": category} for row in rows]
        return findings, failed, skipped

    async def latest(self, actor: Actor) -> dict[str, Any] | None:
        """The latest scan (None before the first), with the counts of the latest completed one."""
        require_admin_actor(actor)
        async with self._database.as_owner() as cur:
            await cur.execute(
                f"select id::text, status, scan_type, {_iso('scanned_at')} as scanned_at, error_message, "
                "skipped_rules from system.advisor_scans order by scanned_at desc, id limit 1"
            )
            scan = await cur.fetchone()
            if scan is None:
                return None
            await cur.execute(
                "select severity, count(*)::int as n from system.advisor_findings f "
                f"where f.scan_id = ({_LATEST_COMPLETED}) and {_NOT_SUPPRESSED} group by severity"
            )
            counts = {row["severity"]: row["n"] for row in await cur.fetchall()}
        return {
            "scanId": scan["id"],
            "status": scan["status"],
            "scanType": scan["scan_type"],
            "scannedAt": scan["scanned_at"],
            "errorMessage": scan["error_message"],
            "skippedRules": scan["skipped_rules"],
            "summary": {
                "total": sum(counts.values()),
                **{level: counts.get(level, 0) for level in SEVERITIES},
            },
        }

    async def issues(
        self,
        actor: Actor,
        *,
        severity: str | None = None,
        category: str | None = None,
        limit: int = DEFAULT_ISSUE_LIMIT,
        offset: int = 0,
    ) -> dict[str, Any]:
        """A page of the latest completed scan's findings, less what is suppressed, most severe first:
        `{issues, total}`."""
        require_admin_actor(actor)
        check_filters(severity, category, limit, offset)
        conditions = [f"f.scan_id = ({_LATEST_COMPLETED})", _NOT_SUPPRESSED]
        params: list[Any] = []
        for column, value in (("severity", severity), ("category", category)):
            if value is not None:
                conditions.append(f"f.{column} = %s")
                params.append(value)
        where = " and ".join(conditions)
        async with self._database.as_owner() as cur:
            await cur.execute(
                f"select count(*)::int as total from system.advisor_findings f where {where}", params
            )
            counted = await cur.fetchone()
            await cur.execute(
                "select id::text, rule_id, severity, category, title, description, affected_object, "
                "recommendation "
                f"from system.advisor_findings f where {where} "
                "order by array_position(array['critical', 'warning', 'info'], severity), rule_id, "
                "affected_object, id limit %s offset %s",
                [*params, limit, offset],
            )
            rows = await cur.fetchall()
        return {"issues": [_issue(row) for row in rows], "total": counted["total"] if counted else 0}

    # Suppressions

    async def suppressions(self, actor: Actor) -> list[dict[str, Any]]:
        """Every suppression, newest first, with the title, severity and category of a finding of the latest
        completed scan it hides, when there is one."""
        require_admin_actor(actor)
        async with self._database.as_owner() as cur:
            await cur.execute(
                f"select s.id::text, s.rule_id, s.affected_object, s.scope, s.reason, s.note, s.created_by, "
                f"{_iso('s.created_at')} as created_at, f.title, f.severity, f.category "
                "from system.advisor_suppressions s left join lateral ("
                "select title, severity, category from system.advisor_findings f "
                f"where f.scan_id = ({_LATEST_COMPLETED}) and f.rule_id = s.rule_id "
                "and (s.scope = 'rule' or f.affected_object = s.affected_object) "
                "order by array_position(array['critical', 'warning', 'info'], f.severity) limit 1"
                f") f on true order by s.created_at desc, s.id limit {MAX_SUPPRESSIONS}"
            )
            rows = await cur.fetchall()
        return [
            _present(
                _suppression(row),
                title=row["title"],
                severity=row["severity"],
                category=row["category"],
            )
            for row in rows
        ]

    async def suppress(self, actor: Actor, body: Mapping[str, Any]) -> dict[str, Any]:
        """Hide one finding (`scope: instance`, by rule and affected object) or a whole rule, across scans."""
        details: dict[str, Any] = {key: body.get(key) for key in ("ruleId", "scope", "reason") if key in body}
        async with audit.refusals(self._database, actor, "CREATE_ADVISOR_SUPPRESSION", MODULE, details):
            require_admin_actor(actor)
            rule_id, affected, scope, reason, note = read_suppression(body)
            details.update(ruleId=rule_id, affectedObject=affected, scope=scope, reason=reason)
            async with self._database.as_owner() as cur:
                await cur.execute("select count(*)::int as n from system.advisor_suppressions")
                counted = await cur.fetchone()
                if counted is not None and counted["n"] >= MAX_SUPPRESSIONS:
                    raise ApiError(
                        409,
                        "DATABASE_CONSTRAINT_VIOLATION",
                        f"There are already {MAX_SUPPRESSIONS} suppressions, the most kept.",
                        "Restore some with DELETE /api/advisor/suppressions/:id, or suppress a whole rule.",
                    )
                await cur.execute(
                    "insert into system.advisor_suppressions (rule_id, affected_object, scope, reason, note, "
                    "created_by) values (%s, %s, %s, %s, %s, %s) on conflict do nothing "
                    "returning id::text, rule_id, affected_object, scope, reason, note, "
                    f"created_by, {_iso('created_at')} as created_at",
                    (rule_id, affected, scope, reason, note, _creator(actor)),
                )
                row = await cur.fetchone()
                if row is None:
                    raise ApiError(409, "DATABASE_DUPLICATE", "This finding is already ignored.", _LIST_HINT)
                details["id"] = row["id"]
                await audit.record(cur, actor, "CREATE_ADVISOR_SUPPRESSION", MODULE, details)
        return _suppression(row)

    async def unsuppress(self, actor: Actor, suppression_id: str) -> None:
        """Show again what a suppression hid."""
        details: dict[str, Any] = {"id": suppression_id[:64]}
        async with audit.refusals(self._database, actor, "DELETE_ADVISOR_SUPPRESSION", MODULE, details):
            require_admin_actor(actor)
            try:
                wanted = str(uuid.UUID(suppression_id))
            except ValueError:
                raise invalid("Invalid id: must be a valid UUID") from None
            async with self._database.as_owner() as cur:
                await cur.execute(
                    "delete from system.advisor_suppressions where id = %s "
                    "returning rule_id, affected_object",
                    (wanted,),
                )
                row = await cur.fetchone()
                if row is None:
                    raise ApiError(404, "NOT_FOUND", "Suppression not found", _LIST_HINT)
                details.update(ruleId=row["rule_id"], affectedObject=row["affected_object"])
                await audit.record(cur, actor, "DELETE_ADVISOR_SUPPRESSION", MODULE, details)


def check_filters(severity: str | None, category: str | None, limit: int, offset: int) -> None:
    """InsForge's checks of `/issues`' query, with bounds on the page."""
    if severity is not None and severity not in SEVERITIES:
        raise invalid("Invalid severity parameter: must be one of critical, warning, info")
    if category is not None and category not in CATEGORIES:
        raise invalid("Invalid category parameter: must be one of security, performance, health")
    if not 1 <= limit <= MAX_ISSUE_LIMIT:
        raise invalid(f"Invalid limit parameter: must be a positive integer, at most {MAX_ISSUE_LIMIT}")
    if not 0 <= offset <= MAX_ISSUE_OFFSET:
        raise invalid(f"Invalid offset parameter: must be a non-negative integer, at most {MAX_ISSUE_OFFSET}")


def read_suppression(body: Mapping[str, Any]) -> tuple[str, str | None, str, str, str | None]:
    """`(ruleId, affectedObject, scope, reason, note)` from a body, with InsForge's messages; the rule must be
    one of the advisor's, and no other field is taken."""
    unknown = [name for name in body if name not in _SUPPRESSION_FIELDS]
    if unknown:
        raise invalid(f"Unknown field: {unknown[0][:64]} (the fields are {', '.join(_SUPPRESSION_FIELDS)})")
    rule_id = body.get("ruleId")
    rule_id = rule_id.strip() if isinstance(rule_id, str) else ""
    if not rule_id or len(rule_id) > 200:
        raise invalid("Invalid ruleId: must be a non-empty string")
    if rule_id not in RULE_IDS:
        raise invalid(f"Invalid ruleId: must be one of {', '.join(RULE_IDS)}")
    scope = body.get("scope")
    if scope not in SCOPES:
        raise invalid("Invalid scope: must be one of instance, rule")
    reason = body.get("reason")
    if reason not in REASONS:
        raise invalid(f"Invalid reason: must be one of {', '.join(REASONS)}")
    affected = body.get("affectedObject")
    affected = affected if isinstance(affected, str) else ""
    if scope == "instance" and (not affected.strip() or len(affected) > 500):
        raise invalid("Invalid affectedObject: required for instance scope, at most 500 characters")
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > 1000):
        raise invalid("Invalid note: must be a string of at most 1000 characters")
    if reason == "other" and (not isinstance(note, str) or not note.strip()):
        raise invalid('Invalid note: required when reason is "other"')
    return rule_id, affected if scope == "instance" else None, str(scope), str(reason), note


async def _statements_view(cur: AsyncCursor[Any]) -> tuple[sql.Identifier | None, str]:
    """pg_stat_statements' view, when the extension is installed here; else why not. (Whether its library is
    loaded shows when the view is read.)"""
    await cur.execute(
        "select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace "
        "where e.extname = 'pg_stat_statements'"
    )
    row = await cur.fetchone()
    if row is None:
        return None, (
            "pg_stat_statements is not installed in this database: CREATE EXTENSION pg_stat_statements "
            "(its library must be in shared_preload_libraries, as it is on the embedded database)."
        )
    return sql.Identifier(row["nspname"], "pg_stat_statements"), ""


def _error_message(failed: Sequence[str], ran: int) -> str | None:
    if not failed:
        return None
    if len(failed) == ran:
        return f"Scan failed: all {ran} rule queries errored. Failed rules: {', '.join(failed)}"
    return f"Scan completed with warnings. Failed rules: {', '.join(failed)}"


async def _save(
    cur: AsyncCursor[Any],
    findings: Sequence[Mapping[str, Any]],
    status: str,
    error: str | None,
    skipped: Sequence[Mapping[str, str]],
) -> str:
    """The scan and its findings; scans past the newest `KEPT_SCANS` go."""
    await cur.execute("set local statement_timeout = 0")
    await cur.execute(
        "insert into system.advisor_scans (status, scan_type, error_message, skipped_rules) "
        "values (%s, 'manual', %s, %s) returning id::text",
        (status, error, Jsonb(list(skipped))),
    )
    row = await cur.fetchone()
    assert row is not None
    scan_id: str = row["id"]
    if findings:
        await cur.executemany(
            "insert into system.advisor_findings (scan_id, rule_id, severity, category, title, description, "
            "affected_object, recommendation) values (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    scan_id,
                    f["rule_id"],
                    f["severity"],
                    f["category"],
                    f["title"],
                    f["description"],
                    f["affected_object"],
                    f["recommendation"],
                )
                for f in findings
            ],
        )
    await cur.execute(
        "delete from system.advisor_scans where id in (select id from system.advisor_scans "
        "order by scanned_at desc, id offset %s)",
        (KEPT_SCANS,),
    )
    return scan_id


def _creator(actor: Actor) -> str:
    """InsForge keeps the admin's user id; the API key and agent keys have none, so their audit name."""
    return actor.principal.user_id or actor.name


def _present(answer: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """`answer` with the optional fields that have a value (InsForge leaves out what it does not have)."""
    return {**answer, **{name: value for name, value in optional.items() if value is not None}}


def _issue(row: Mapping[str, Any]) -> dict[str, Any]:
    return _present(
        {
            "id": row["id"],
            "ruleId": row["rule_id"],
            "severity": row["severity"],
            "category": row["category"],
            "title": row["title"],
            "description": row["description"],
        },
        affectedObject=row["affected_object"],
        recommendation=row["recommendation"],
    )


def _suppression(row: Mapping[str, Any]) -> dict[str, Any]:
    return _present(
        {"id": row["id"], "ruleId": row["rule_id"], "scope": row["scope"], "reason": row["reason"]},
        affectedObject=row["affected_object"],
        note=row["note"],
        createdBy=row["created_by"],
        createdAt=row["created_at"],
    )
