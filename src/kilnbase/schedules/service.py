"""The service behind `/api/schedules` (admin): schedules, their run logs, and how long logs are kept.

Shapes, codes and messages are InsForge's (`backend/src/api/routes/schedules`, `services/schedules`,
`shared-schemas/schedules*.schema.ts`): a schedule is `{id, name, cronSchedule, functionUrl, httpMethod,
headers, body, cronJobId, lastExecutedAt, isActive, nextRun, createdAt, updatedAt}`; create answers 201
`{id, cronJobId, message}`; an unknown id is 404 `SCHEDULE_NOT_FOUND`; a header naming a secret that does not
exist is 404 `SECRET_NOT_FOUND`. Headers are stored as the admin gave them, placeholders and all, encrypted
with the project's SecretBox (the job's id bound as associated data), and shown back that way: a secret's
value is put in only when a run sends the request (`runner.py`), so it is never stored here, never answered,
and a rotated secret takes effect at the next run. Where InsForge differs between its routes (logs of an
unknown schedule answer an empty page there), Kilnbase answers 404 as for the schedule itself.

An agent key may point a schedule only at public addresses and at this project's own URL (`reach.py`);
the job's row remembers that an agent set its URL (`url_set_by_agent`), so that each run checks again. An
admin setting the URL lifts the mark.

Every change, and every refused one, is audited (module `SCHEDULES`), with header names but never their
values, in the transaction that makes it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from psycopg import AsyncCursor
from psycopg.types.json import Jsonb

from kilnbase import audit
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError, require_admin_actor
from kilnbase.http.json_body import FIX_FIELDS
from kilnbase.identity.actor import Actor
from kilnbase.keys.secret_box import SecretBox
from kilnbase.schedules import cadence as cadences
from kilnbase.schedules.definitions import Changes, read, secret_keys
from kilnbase.schedules.reach import OutOfReach, Reach, Unresolved

MODULE = "SCHEDULES"
#: The most schedules one list answers with.
MAX_LISTED = 1000
DEFAULT_LOG_LIMIT = 50
MAX_LOG_LIMIT = 100
MAX_RETENTION_DAYS = 3650

#: The active secrets among the keys asked for, decrypted (the functions runtime's reader), and when the
#: first of them expires.
SecretValues = Callable[[Sequence[str] | None], Awaitable[tuple[dict[str, str], float | None]]]

_ISO = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'


def _iso(column: str) -> str:
    return f"to_char({column} at time zone 'UTC', '{_ISO}')"


_COLUMNS = (
    "id::text, name, cron_schedule, function_url, http_method, headers_ciphertext, body, is_active, "
    f"cron_job_id::text, {_iso('last_executed_at')} as last_executed_at, "
    f"{_iso('next_run_at')} as next_run_at, {_iso('created_at')} as created_at, "
    f"{_iso('updated_at')} as updated_at"
)


def headers_context(job_id: str) -> str:
    return f"schedules.jobs.{job_id}.headers"


def seal_headers(box: SecretBox, job_id: str, headers: Mapping[str, str] | None) -> str | None:
    if not headers:
        return None
    return box.encrypt(orjson.dumps(dict(headers)).decode(), context=headers_context(job_id))


def open_headers(box: SecretBox, job_id: str, ciphertext: str | None) -> dict[str, str] | None:
    if ciphertext is None:
        return None
    opened: dict[str, str] = orjson.loads(box.decrypt(ciphertext, context=headers_context(job_id)))
    return opened


def not_found(message: str = "Schedule not found.") -> ApiError:
    return ApiError(
        404,
        "SCHEDULE_NOT_FOUND",
        message,
        "List the schedules with GET /api/schedules; create one with POST /api/schedules.",
    )


def _job_id(value: str) -> str:
    """A schedule id is a UUID; anything else names no schedule (404, as an unknown one)."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise not_found() from None


class Schedules:
    def __init__(self, database: Database, box: SecretBox, secret_values: SecretValues, reach: Reach) -> None:
        self._database = database
        self._box = box
        self._secret_values = secret_values
        self._reach = reach

    def _schedule(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "id": row["id"],
            "name": row["name"],
            "cronSchedule": row["cron_schedule"],
            "functionUrl": row["function_url"],
            "httpMethod": row["http_method"],
            "headers": open_headers(self._box, row["id"], row["headers_ciphertext"]),
            "body": row["body"],
            "cronJobId": row["cron_job_id"],
            "lastExecutedAt": row["last_executed_at"],
            "isActive": row["is_active"],
            "nextRun": row["next_run_at"],
            "createdAt": row["created_at"],
            "updatedAt": row["updated_at"],
        }

    async def _check_secrets(self, headers: Mapping[str, str]) -> None:
        """Every secret the headers name exists and is active (InsForge checks at create and update too)."""
        wanted = secret_keys(headers)
        if not wanted:
            return
        found, _expiry = await self._secret_values(wanted)
        for name, value in headers.items():
            for key in secret_keys({name: value}):
                if key not in found:
                    raise ApiError(
                        404,
                        "SECRET_NOT_FOUND",
                        f'Secret with key "{key}" not found for schedule header "{name}".',
                        "Create it with POST /api/secrets {key, value}, or change the header.",
                    )

    async def _check_url_reach(self, actor: Actor, url: str) -> None:
        """An agent key's URL reaches only public addresses and this project (see `reach.py`); a name
        that does not resolve now is taken, since every run of the job checks again."""
        if actor.principal.agent is None:
            return
        try:
            await self._reach.checked(url)
        except Unresolved:
            return
        except OutOfReach as exc:
            raise ApiError(
                403,
                "FORBIDDEN",
                f"This agent key may not point a schedule at {exc}: a schedule an agent key sets may call "
                f"public addresses and this project's own URL ({self._reach.own_url}) only.",
                "Use a public URL, or a path on this project such as /functions/<slug>; or ask the project "
                "admin to create the schedule with the admin key (an admin's schedule may call any address).",
            ) from None

    async def list(self, actor: Actor) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        async with self._database.as_owner() as cur:
            await cur.execute(
                f"select {_COLUMNS} from schedules.jobs order by created_at desc limit {MAX_LISTED}"
            )
            rows = await cur.fetchall()
        return [self._schedule(row) for row in rows]

    async def get(self, actor: Actor, schedule_id: str) -> dict[str, Any]:
        require_admin_actor(actor)
        job_id = _job_id(schedule_id)
        async with self._database.as_owner() as cur:
            await cur.execute(f"select {_COLUMNS} from schedules.jobs where id = %s", (job_id,))
            row = await cur.fetchone()
        if row is None:
            raise not_found()
        return self._schedule(row)

    async def create(self, actor: Actor, body: Mapping[str, Any]) -> dict[str, Any]:
        """A new, active schedule; `{id, cronJobId}`."""
        details: dict[str, Any] = {"name": body.get("name")}
        async with audit.refusals(self._database, actor, "CREATE_SCHEDULE", MODULE, details):
            require_admin_actor(actor)
            changes = read(body, creating=True)
            details.update(changes.summary())
            _check_secrets_reach(actor, changes.secret_keys())
            assert changes.cadence is not None and changes.function_url is not None
            await self._check_url_reach(actor, changes.function_url)
            await self._check_secrets(changes.headers or {})
            job_id = str(uuid.uuid4())
            async with self._database.as_owner() as cur:
                first = await _first_run(cur, changes.cadence)
                await cur.execute(
                    "insert into schedules.jobs (id, name, cron_schedule, function_url, http_method, "
                    "headers_ciphertext, body, cron_job_id, next_run_at, url_set_by_agent) "
                    "values (%s, %s, %s, %s, %s, %s, %s, nextval('schedules.cron_job_ids'), %s, %s) "
                    "returning cron_job_id::text",
                    (
                        job_id,
                        changes.name,
                        changes.cadence.text,
                        changes.function_url,
                        changes.http_method,
                        seal_headers(self._box, job_id, changes.headers),
                        Jsonb(changes.body) if changes.body is not None else None,
                        first,
                        actor.principal.agent is not None,
                    ),
                )
                row = await cur.fetchone()
                assert row is not None
                details["id"] = job_id
                await audit.record(cur, actor, "CREATE_SCHEDULE", MODULE, details)
        return {"id": job_id, "cronJobId": row["cron_job_id"]}

    async def update(self, actor: Actor, schedule_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Change what is given; `isActive` switches the job off or on. A job that is on is scheduled anew
        when anything else changes (a new `cronJobId`, as in InsForge); its next run moves only when its
        cadence does. `{id, cronJobId}` (cronJobId left out while the job is off)."""
        details: dict[str, Any] = {"id": schedule_id}
        async with audit.refusals(self._database, actor, "UPDATE_SCHEDULE", MODULE, details):
            require_admin_actor(actor)
            job_id = _job_id(schedule_id)
            changes = read(body, creating=False)
            details.update(id=job_id, **changes.summary())
            if changes.function_url is not None:  # (resolved outside the transaction: no row waits on DNS)
                await self._check_url_reach(actor, changes.function_url)
            async with self._database.as_owner() as cur:
                await cur.execute(
                    "select is_active, cron_schedule, cron_job_id::text, headers_ciphertext "
                    "from schedules.jobs where id = %s for update",
                    (job_id,),
                )
                existing = await cur.fetchone()
                if existing is None:
                    raise not_found("Schedule not found")
                _check_secrets_reach(actor, changes.secret_keys())
                if changes.function_url is not None:  # (the secrets its headers send would go elsewhere)
                    headers = open_headers(self._box, job_id, existing["headers_ciphertext"])
                    _check_secrets_reach(actor, secret_keys(headers or {}))
                if changes.headers is not None:
                    await self._check_secrets(changes.headers)
                cron_job_id = await self._apply(cur, job_id, changes, existing, actor)
                await audit.record(cur, actor, "UPDATE_SCHEDULE", MODULE, details)
        answer: dict[str, Any] = {"id": job_id}
        if cron_job_id is not None:
            answer["cronJobId"] = cron_job_id
        return answer

    async def _apply(
        self,
        cur: AsyncCursor[Any],
        job_id: str,
        changes: Changes,
        existing: Mapping[str, Any],
        actor: Actor,
    ) -> str | None:
        assignments: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("name", changes.name),
            ("cron_schedule", changes.cadence.text if changes.cadence else None),
            ("function_url", changes.function_url),
            ("http_method", changes.http_method),
        ):
            if value is not None:
                assignments.append(f"{column} = %s")
                params.append(value)
        if changes.function_url is not None:  # (an agent's URL is checked at each run; an admin's is not)
            assignments.append("url_set_by_agent = %s")
            params.append(actor.principal.agent is not None)
        if changes.headers is not None:
            assignments.append("headers_ciphertext = %s")
            params.append(seal_headers(self._box, job_id, changes.headers))
        if changes.body_given:
            assignments.append("body = %s")
            params.append(Jsonb(changes.body) if changes.body is not None else None)
        active = existing["is_active"] if changes.is_active is None else changes.is_active
        switched_on = active and not existing["is_active"]
        if not active:
            assignments += ["is_active = false", "next_run_at = null", "cron_job_id = null"]
        else:
            if switched_on or changes.cadence is not None:
                cadence = changes.cadence or cadences.parse(existing["cron_schedule"])
                assignments += ["is_active = true", "next_run_at = %s"]
                params.append(await _first_run(cur, cadence))
            if switched_on or changes.changes_job:
                assignments.append("cron_job_id = nextval('schedules.cron_job_ids')")
        if not assignments:
            cron_job_id: str | None = existing["cron_job_id"]
            return cron_job_id
        await cur.execute(
            f"update schedules.jobs set {', '.join(assignments)}, updated_at = now() where id = %s "
            "returning cron_job_id::text",
            (*params, job_id),
        )
        row = await cur.fetchone()
        assert row is not None
        updated: str | None = row["cron_job_id"]
        return updated

    async def delete(self, actor: Actor, schedule_id: str) -> None:
        """The schedule and its logs; a run under way finishes, and its log is dropped."""
        details: dict[str, Any] = {"id": schedule_id}
        async with audit.refusals(self._database, actor, "DELETE_SCHEDULE", MODULE, details):
            require_admin_actor(actor)
            job_id = _job_id(schedule_id)
            async with self._database.as_owner() as cur:
                await cur.execute("delete from schedules.jobs where id = %s returning name", (job_id,))
                row = await cur.fetchone()
                if row is None:
                    raise not_found("Schedule not found")
                details["name"] = row["name"]
                await audit.record(cur, actor, "DELETE_SCHEDULE", MODULE, details)

    async def logs(self, actor: Actor, schedule_id: str, limit: int, offset: int) -> dict[str, Any]:
        """A page of the schedule's runs, newest first: `{logs, totalCount, limit, offset}`."""
        require_admin_actor(actor)
        job_id = _job_id(schedule_id)
        limit = min(max(1, limit), MAX_LOG_LIMIT)
        offset = max(0, offset)
        async with self._database.as_owner() as cur:
            await cur.execute(
                "select (select count(*) from schedules.job_logs where job_id = j.id) as total "
                "from schedules.jobs j where j.id = %s",
                (job_id,),
            )
            counted = await cur.fetchone()
            if counted is None:
                raise not_found()
            await cur.execute(
                f"select id::text, job_id::text, {_iso('executed_at')} as executed_at, status_code, success, "
                "duration_ms, message from schedules.job_logs where job_id = %s "
                "order by executed_at desc, id limit %s offset %s",
                (job_id, limit, offset),
            )
            rows = await cur.fetchall()
        return {
            "logs": [
                {
                    "id": row["id"],
                    "scheduleId": row["job_id"],
                    "executedAt": row["executed_at"],
                    "statusCode": row["status_code"],
                    "success": row["success"],
                    "durationMs": int(row["duration_ms"]),
                    "message": row["message"],
                }
                for row in rows
            ],
            "totalCount": int(counted["total"]),
            "limit": limit,
            "offset": offset,
        }

    async def config(self, actor: Actor) -> dict[str, Any]:
        require_admin_actor(actor)
        async with self._database.as_owner() as cur:
            await cur.execute("select retention_days from schedules.config")
            row = await cur.fetchone()
        return {"retentionDays": row["retention_days"] if row else None}

    async def update_config(self, actor: Actor, body: Mapping[str, Any]) -> None:
        """`{retentionDays}`: a whole number of days (1 to 3650), or null to keep logs for ever."""
        details: dict[str, Any] = {"retentionDays": body.get("retentionDays")}
        async with audit.refusals(self._database, actor, "UPDATE_SCHEDULES_CONFIG", MODULE, details):
            require_admin_actor(actor)
            days = _retention_days(body)
            async with self._database.as_owner() as cur:
                await cur.execute(
                    "update schedules.config set retention_days = %s, updated_at = now()", (days,)
                )
                if days is not None:  # (the runners' sweep does it hourly; a shorter retention holds now)
                    await cur.execute(
                        "delete from schedules.job_logs "
                        "where executed_at < now() - make_interval(days => %s)",
                        (days,),
                    )
                await audit.record(cur, actor, "UPDATE_SCHEDULES_CONFIG", MODULE, details)


def _retention_days(body: Mapping[str, Any]) -> int | None:
    problems = [
        f"{name[:64]}: not a field of the schedules config" for name in body if name != "retentionDays"
    ]
    if "retentionDays" not in body:
        problems.append("retentionDays: Required")
    days = body.get("retentionDays")
    if days is not None and (
        isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_RETENTION_DAYS
    ):
        problems.append(f"retentionDays: a whole number of days from 1 to {MAX_RETENTION_DAYS}, or null")
    if problems:
        raise ApiError(400, "INVALID_INPUT", ", ".join(problems), FIX_FIELDS)
    return days


async def _first_run(cur: AsyncCursor[Any], cadence: cadences.Cadence) -> datetime:
    """The first run of a job scheduled now, by the database's clock (which every process shares)."""
    await cur.execute("select now() as now")
    row = await cur.fetchone()
    assert row is not None
    return cadence.next_after(row["now"])


def _check_secrets_reach(actor: Actor, keys: Sequence[str]) -> None:
    """An agent key may send secrets with a schedule's request, or choose where a request that sends them
    goes, only if it may read secrets itself (`secrets:read`): a header `${{secrets.KEY}}` pointed at a URL
    of the agent's choosing delivers the value to it. People, and agents that may read secrets, pass; so
    does every schedule whose headers name no secret."""
    principal = actor.principal
    if not keys or principal.agent is None or principal.allows("secrets", "read"):
        return
    raise ApiError(
        403,
        "FORBIDDEN",
        "This agent key may not send secrets with a schedule's request ("
        + ", ".join(keys)
        + "), nor choose where such a request goes: its scopes do not reach secrets:read.",
        "Leave ${{secrets.*}} out of the headers, or ask an admin for a key with secrets:read "
        "(POST /api/agents/keys).",
    )
