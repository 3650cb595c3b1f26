"""The log sources an agent can read (`GET /api/logs/:source`), each as InsForge's `{id, timestamp,
eventMessage, body}` lines, oldest first among the newest `limit` that match:

- `insforge.logs`: the API's request log (`system.request_logs`);
- `postgREST.logs`: the same log, for the records API's paths only;
- `postgres.logs`: the embedded cluster's log file (its last megabyte), or, on a Postgres Kilnbase did not
  start, what `pg_stat_activity` shows of the database's sessions;
- `function.logs`: the edge functions' log (`functions.logs`), once the functions capability is installed.

Every message passes the structured log's scrubber, and SQL passwords are cut from the database's lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from psycopg import AsyncCursor
from psycopg.rows import DictRow

from kilnbase.structured_log import scrub

SOURCES = ("insforge.logs", "postgREST.logs", "postgres.logs", "function.logs")
#: The records API's paths (`postgREST.logs`).
RECORDS_PATHS = ("/api/database/records/%", "/api/database/rpc/%")
#: How much of the end of the database's log file is read.
TAIL_BYTES = 1024 * 1024
#: A password literal in SQL (`ALTER ROLE x PASSWORD 'secret'`); `password=...` is the scrubber's.
_SQL_PASSWORD = re.compile(r"(?i)(password\s+)('(?:[^']|'')*')")
_PG_LINE = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?)(?: ([A-Z]{2,5}|[+-]\d{2}))?")


@dataclass(frozen=True)
class LogQuery:
    limit: int
    search: str | None = None
    start: datetime | None = None
    end: datetime | None = None


def clean(message: str) -> str:
    return _SQL_PASSWORD.sub(r"\1[redacted]", scrub(message))


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _like(search: str) -> str:
    return "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _filters(query: LogQuery, text: str) -> tuple[list[str], list[Any]]:
    """WHERE conditions and their values for a search over `text` (an SQL expression) and the time range."""
    conditions = ["true"]
    params: list[Any] = []
    if query.search:
        conditions.append(f"({text}) ilike %s")
        params.append(_like(query.search))
    if query.start:
        conditions.append("created_at >= %s")
        params.append(query.start)
    if query.end:
        conditions.append("created_at < %s")
        params.append(query.end)
    return conditions, params


async def request_lines(
    cur: AsyncCursor[DictRow], query: LogQuery, *, records_only: bool
) -> list[dict[str, Any]]:
    conditions, params = _filters(query, "method || ' ' || path || ' ' || status::text || ' ' || role")
    if records_only:
        conditions.append("(path like %s or path like %s)")
        params.extend(RECORDS_PATHS)
    await cur.execute(
        "select * from (select id, created_at, method, path, status, duration_ms, role "
        "from system.request_logs "
        f"where {' and '.join(conditions)} order by id desc limit %s) newest order by id",
        [*params, query.limit],
    )
    return [
        {
            "id": str(row["id"]),
            "timestamp": _iso(row["created_at"]),
            "eventMessage": clean(
                f"{row['method']} {row['path']} {row['status']} {row['duration_ms']:g}ms {row['role']}"
            ),
            "body": {
                "method": row["method"],
                "path": clean(row["path"]),
                "status": row["status"],
                "durationMs": row["duration_ms"],
                "role": row["role"],
            },
        }
        for row in await cur.fetchall()
    ]


def _file_tail(path: Path) -> list[str]:
    with path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - TAIL_BYTES))
        data = handle.read()
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[1:] if size > TAIL_BYTES else lines  # (the first may be cut)


def _entries(lines: list[str]) -> list[tuple[str | None, str]]:
    """Log lines grouped into entries: a line that starts with a timestamp starts one (continuation lines,
    such as a statement's DETAIL, stay with it)."""
    entries: list[tuple[str | None, str]] = []
    for line in lines:
        stamp = _PG_LINE.match(line)
        if stamp or not entries:
            entries.append((stamp.group(1) if stamp else None, line))
        else:
            entries[-1] = (entries[-1][0], entries[-1][1] + "\n" + line)
    return entries


def _parse_stamp(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text.replace(" ", "T") + "+00:00")
    except ValueError:
        return None


def postgres_file_lines(path: Path, query: LogQuery) -> list[dict[str, Any]]:
    """The embedded cluster's log (its file's last megabyte; the cluster logs in UTC)."""
    found: list[dict[str, Any]] = []
    for number, (stamp, text) in enumerate(_entries(_file_tail(path))):
        moment = _parse_stamp(stamp)
        if query.search and query.search.lower() not in text.lower():
            continue
        if moment is not None and (
            (query.start and moment < query.start) or (query.end and moment >= query.end)
        ):
            continue
        if moment is None and (query.start or query.end):
            continue
        message = clean(text)
        found.append(
            {
                "id": f"{path.stat().st_size}-{number}",
                "timestamp": _iso(moment) if moment else None,
                "eventMessage": message,
                "body": {"file": path.name, "line": message},
            }
        )
    return found[-query.limit :]


async def postgres_activity_lines(cur: AsyncCursor[DictRow], query: LogQuery) -> list[dict[str, Any]]:
    """A Postgres Kilnbase did not start has no log file here: its sessions, as `pg_stat_activity` shows
    them (a query's text is visible to the database owner Kilnbase logs in as)."""
    await cur.execute(
        "select pid, usename, application_name, state, backend_type, wait_event, "
        "coalesce(state_change, backend_start) as at, query from pg_stat_activity "
        "where datname = current_database() or datname is null order by at nulls first"
    )
    found: list[dict[str, Any]] = []
    for row in await cur.fetchall():
        moment = row["at"]
        text = (
            f"[{row['pid']}] {row['backend_type']} {row['usename'] or '-'} {row['state'] or '-'}"
            f"{' wait=' + row['wait_event'] if row['wait_event'] else ''}: {row['query'] or ''}"
        )
        message = clean(text)
        if query.search and query.search.lower() not in message.lower():
            continue
        if moment is not None and (
            (query.start and moment < query.start) or (query.end and moment >= query.end)
        ):
            continue
        found.append(
            {
                "id": f"{row['pid']}",
                "timestamp": _iso(moment) if moment else None,
                "eventMessage": message,
                "body": {
                    "pid": row["pid"],
                    "user": row["usename"],
                    "application": row["application_name"],
                    "state": row["state"],
                    "backendType": row["backend_type"],
                },
            }
        )
    return found[-query.limit :]


async def function_lines(cur: AsyncCursor[DictRow], query: LogQuery) -> list[dict[str, Any]]:
    """The edge functions' log; empty while the functions capability is not installed."""
    await cur.execute("select to_regclass('functions.logs') is not null as installed")
    row = await cur.fetchone()
    if not row or not row["installed"]:
        return []
    conditions, params = _filters(query, "slug || ' ' || coalesce(level, '') || ' ' || coalesce(message, '')")
    await cur.execute(
        "select * from (select id::text as id, created_at, slug, request_id::text as request_id, level, "
        "message, "
        f"status, duration_ms from functions.logs where {' and '.join(conditions)} "
        "order by created_at desc limit %s) newest order by created_at",
        [*params, query.limit],
    )
    return [
        {
            "id": r["id"],
            "timestamp": _iso(r["created_at"]),
            "eventMessage": clean(f"{r['slug']} {r['level'] or ''} {r['message'] or ''}".strip()),
            "body": {
                "slug": r["slug"],
                "requestId": r["request_id"],
                "level": r["level"],
                "message": clean(r["message"] or ""),
                "status": r["status"],
                "durationMs": r["duration_ms"],
            },
        }
        for r in await cur.fetchall()
    ]
