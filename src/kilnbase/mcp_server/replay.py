"""Reading an agent's session back from the audit log, and replaying its writes on another Kilnbase.

Every tool call is audited with its session (a `kilnbase mcp` process, an agent's session token, or the
`X-Agent-Session` header), its arguments (secrets masked), whether it writes, and its outcome. That is
enough to review what an agent did as a sequence of calls, and to promote its work from a sandbox to a
staging server: the writes that succeeded run again, in order, through the target's `/mcp` as the key given
for it (so the target's own scopes, approvals and audit apply). A call whose arguments were masked cannot
be replayed faithfully and is skipped, saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import orjson
import psycopg
from psycopg.rows import dict_row

from kilnbase.mcp_server.results import MASKED, is_cut


@dataclass(frozen=True)
class RecordedCall:
    at: datetime
    actor: str
    tool: str
    arguments: dict[str, Any]
    write: bool
    outcome: str
    detail: str

    @property
    def replayable(self) -> bool:
        return not _altered(self.arguments)


def _altered(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_altered(v) for v in value.values())
    if isinstance(value, list):
        return any(_altered(v) for v in value)
    return value == MASKED or (isinstance(value, str) and is_cut(value))


def session_calls(conninfo: str, session: str) -> list[RecordedCall]:
    with psycopg.connect(conninfo, row_factory=dict_row) as conn:
        rows = conn.execute(
            "select created_at, actor, details, outcome from system.audit_logs "
            "where action = 'TOOL_CALL' and details->>'session' = %s order by created_at, id",
            (session,),
        ).fetchall()
    return [
        RecordedCall(
            row["created_at"],
            row["actor"],
            row["details"]["tool"],
            row["details"].get("arguments") or {},
            bool(row["details"].get("write")),
            row["outcome"],
            row["details"].get("error") or row["details"].get("resultSummary") or "",
        )
        for row in rows
    ]


def recent_sessions(conninfo: str, limit: int = 20) -> list[dict[str, Any]]:
    with psycopg.connect(conninfo, row_factory=dict_row) as conn:
        rows: list[dict[str, Any]] = conn.execute(
            "select details->>'session' as session, min(actor) as actor, count(*) as calls, "
            "count(*) filter (where (details->>'write')::boolean) as writes, "
            "min(created_at) as started, max(created_at) as ended from system.audit_logs "
            "where action = 'TOOL_CALL' and details ? 'session' "
            "group by 1 order by max(created_at) desc limit %s",
            (limit,),
        ).fetchall()
    return rows


def call_remote(url: str, key: str, session: str, call: RecordedCall) -> tuple[bool, str]:
    """One tool call on another server's `/mcp`; (succeeded, its text)."""
    response = httpx.post(
        url.rstrip("/") + "/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": call.tool, "arguments": call.arguments},
        },
        headers={
            "Authorization": f"Bearer {key}",
            "Accept": "application/json, text/event-stream",
            "X-Agent-Session": session,
        },
        timeout=120,
    )
    if response.status_code != 200:
        return False, f"HTTP {response.status_code}: {response.text[:300]}"
    body = orjson.loads(response.content)
    if "error" in body:
        return False, str(body["error"].get("message"))
    result = body["result"]
    text = "".join(block.get("text", "") for block in result.get("content", []))
    return not result.get("isError", False), text


def replay_writes(
    calls: list[RecordedCall],
    url: str,
    key: str,
    session: str,
    report: Callable[[RecordedCall, str], None],
    *,
    dry_run: bool,
) -> int:
    """Run the session's successful writes on `url`, in order; returns how many failed there."""
    failures = 0
    for call in calls:
        if not call.write or call.outcome != "success":
            continue
        if not call.replayable:
            report(call, "skipped: its arguments were masked or cut in the audit log")
            continue
        if dry_run:
            report(call, "would run")
            continue
        succeeded, text = call_remote(url, key, f"replay-of-{session}", call)
        failures += not succeeded
        report(call, ("ran: " if succeeded else "FAILED: ") + text[:200])
    return failures
