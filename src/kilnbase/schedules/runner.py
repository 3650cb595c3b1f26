"""The runner: one task in each API process that makes the schedules' HTTP calls when they are due.

InsForge hands this to pg_cron and pgsql-http inside Postgres; the embedded Postgres has neither, so each
Kilnbase process runs this loop instead, and the database decides which process makes which run.

**Claiming a run.** Due jobs are read with `SELECT ... FOR UPDATE SKIP LOCKED`, and in the same transaction
each one's `next_run_at` is moved to its next run and `running_until` set to the end of its time limit. A
second process reading at the same moment skips the rows the first has locked; one that reads them just
after the first committed sees (Postgres re-checks a locked row's new version against the WHERE clause)
that they are no longer due. So each run is claimed by exactly one process, and different processes can
claim different jobs at once, which one advisory lock over the whole table would not allow. A job whose
run is still under way (`running_until` ahead) is not claimed again: like pg_cron, at most one run of a
job at a time. A process that dies mid-run frees its job when `running_until` passes. A run missed while
no process was up is made once, when one is, and the job goes on from then (no backlog of missed runs).

**Sleeping.** The loop sleeps until the soonest due run, by the database's clock, and is woken early by
`NOTIFY kilnbase_schedules` (from a trigger, when a run becomes due sooner: a new job, a job switched on, a
new cadence) or by one of its own runs ending. Nothing polls: an idle server with no schedules wakes only
to delete old logs (`retention_sweep_seconds`, hourly by default).

**A run.** The stored headers are opened, `${{secrets.KEY}}` replaced with the secret's current value, and
the request sent with httpx (connect and total time limits; redirects are not followed; at most
`MAX_RESPONSE_BYTES` of the answer read). One log row per run: the status (500 when no answer came, as
InsForge logs it), success (a 2xx answer), the duration and a short message; a secret's value is cut out
of any message. A failure of any kind is logged, never raised: the loop goes on.

**An agent's URL.** A job whose URL an agent key set (`url_set_by_agent`) calls only public addresses and
this project's own URL: its host is resolved at each run, every address checked, and the request sent to a
checked address (`reach.py` says how, and why not otherwise). A run refused so is logged as not called,
with the host and the address it resolved to.

**Only in the server.** The runner is the capability's `background` work: `kilnbase serve` runs it; a
`kilnbase mcp` process over stdio (an editor's) offers the tools and makes no scheduled calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx
import orjson
import psycopg

from kilnbase.config import Settings
from kilnbase.db.claim_loop import ClaimLoop
from kilnbase.db.session import Database
from kilnbase.http import outbound
from kilnbase.http.errors import ApiError
from kilnbase.keys.secret_box import SecretBox
from kilnbase.schedules import cadence as cadences
from kilnbase.schedules.definitions import SECRET_PLACEHOLDER, secret_keys
from kilnbase.schedules.reach import OutOfReach, Reach, Unresolved, dialled
from kilnbase.schedules.service import SecretValues, open_headers

log = logging.getLogger("kilnbase.schedules")

CHANNEL = "kilnbase_schedules"
#: Runs one process has under way at once, at most; more due jobs wait for the next claim.
MAX_RUNS_IN_FLIGHT = 64
#: The most of a target's answer read (and dropped: the log keeps only its status).
MAX_RESPONSE_BYTES = 64 * 1024
#: A log message's length, at most.
MAX_MESSAGE = 500
#: Added to a run's time limit for its claim: the log is written after the call ends.
LEASE_MARGIN_SECONDS = 30.0
#: Log rows deleted per statement by the retention sweep.
PRUNE_BATCH = 10_000
_SECRET_MASK = "[secret]"  # noqa: S105 (what replaces a secret in a message)
#: What a header value can carry: printable ASCII and tabs (httpx sends ASCII only; h11 refuses line breaks).
_HEADER_TEXT = re.compile(r"[\t\x20-\x7e]*")


@dataclass(frozen=True)
class ClaimedRun:
    id: str
    function_url: str
    http_method: str
    headers_ciphertext: str | None
    body: dict[str, Any] | None
    #: An agent key set the URL: only public addresses and the project's own URL, checked at the run.
    url_set_by_agent: bool = False


@dataclass(frozen=True)
class Outcome:
    status_code: int
    success: bool
    message: str


def target_url(function_url: str, base_url: str) -> str:
    """An absolute URL as it is; a path (`/functions/report`) on this server, by its local address."""
    return urljoin(base_url + "/", function_url) if function_url.startswith("/") else function_url


def _masked(text: str, secrets: Mapping[str, str]) -> str:
    for value in secrets.values():
        if value:
            text = text.replace(value, _SECRET_MASK)
    return text[:MAX_MESSAGE]


class ScheduleRunner(ClaimLoop[ClaimedRun]):
    def __init__(
        self,
        settings: Settings,
        database: Database,
        conninfo: str,
        box: SecretBox,
        secret_values: SecretValues,
        reach: Reach,
    ) -> None:
        super().__init__(
            name="schedules",
            channel=CHANNEL,
            conninfo=conninfo,
            max_in_flight=MAX_RUNS_IN_FLIGHT,
            prune_seconds=settings.schedules.retention_sweep_seconds,
            log=log,
        )
        self._settings = settings.schedules
        self._reach = reach
        self._base_url = settings.local_url
        self._database = database
        self._box = box
        self._secret_values = secret_values
        self._client: httpx.AsyncClient | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The capability's background work: the claiming loop, with its HTTP client (closed once the runs
        under way were cancelled: their claims lapse)."""
        async with self._new_client() as self._client, self.claiming():
            yield

    def _new_client(self) -> httpx.AsyncClient:
        return outbound.client(self._settings.request_timeout_seconds, self._settings.connect_timeout_seconds)

    def task_name(self, run: ClaimedRun) -> str:
        return f"kilnbase-schedule-{run.id}"

    async def claim(self, most: int) -> list[ClaimedRun]:
        """Claim up to `most` due runs (see the module's docstring): each moved on to its next run and
        leased for its time limit, in one transaction."""
        if most <= 0:
            return []
        lease = self._settings.request_timeout_seconds + LEASE_MARGIN_SECONDS
        claimed = []
        async with self._database.as_owner() as cur:
            await cur.execute(
                "select id::text, cron_schedule, function_url, http_method, headers_ciphertext, body, "
                "url_set_by_agent, now() as now from schedules.jobs "
                "where is_active and next_run_at <= now() "
                "and (running_until is null or running_until <= now()) "
                "order by next_run_at limit %s for update skip locked",
                (most,),
            )
            for row in await cur.fetchall():
                try:
                    next_run = cadences.parse(row["cron_schedule"]).next_after(row["now"])
                except ApiError:  # (only a hand edit of the table stores one: switched off, and said)
                    log.warning("schedule %s has an invalid cron schedule; switched off", row["id"])
                    await cur.execute(
                        "update schedules.jobs set is_active = false, next_run_at = null, cron_job_id = null "
                        "where id = %s",
                        (row["id"],),
                    )
                    continue
                await cur.execute(
                    "update schedules.jobs set next_run_at = %s, "
                    "running_until = now() + make_interval(secs => %s) where id = %s",
                    (next_run, lease, row["id"]),
                )
                claimed.append(
                    ClaimedRun(
                        row["id"],
                        row["function_url"],
                        row["http_method"],
                        row["headers_ciphertext"],
                        row["body"],
                        row["url_set_by_agent"],
                    )
                )
        return claimed

    async def seconds_to_next(self) -> float:
        """Until the soonest run that may be claimed, or the next retention sweep, whichever comes first."""
        async with self._database.as_owner() as cur:
            await cur.execute(
                "select extract(epoch from min(greatest(next_run_at, coalesce(running_until, next_run_at))) "
                "- clock_timestamp())::float8 as seconds from schedules.jobs where is_active"
            )
            row = await cur.fetchone()
        return self.wake_in(row["seconds"] if row is not None else None)

    async def handle(self, run: ClaimedRun) -> None:
        started = time.monotonic()
        secrets: dict[str, str] = {}
        try:
            headers = open_headers(self._box, run.id, run.headers_ciphertext) or {}
            secrets = await self._secrets_named(headers)
            outcome = await self._call(run, headers, secrets)
        except Exception as exc:  # the run fails, the runner goes on
            outcome = Outcome(500, False, _masked(outbound.describe(exc), secrets))
        duration_ms = int((time.monotonic() - started) * 1000)
        try:
            await self._record(run.id, outcome, duration_ms)
        except psycopg.Error as exc:
            log.warning("schedule %s ran but its log was not written: %s", run.id, type(exc).__name__)

    async def _secrets_named(self, headers: Mapping[str, str]) -> dict[str, str]:
        wanted = secret_keys(headers)
        if not wanted:
            return {}
        found, _expiry = await self._secret_values(wanted)
        return {key: found[key] for key in wanted if key in found}

    async def _call(self, run: ClaimedRun, headers: Mapping[str, str], secrets: Mapping[str, str]) -> Outcome:
        resolved: dict[str, str] = {}
        for name, value in headers.items():
            for key in secret_keys({name: value}):
                if key not in secrets:
                    return Outcome(
                        500, False, f'Secret with key "{key}" not found for schedule header "{name}".'
                    )
                if not _HEADER_TEXT.fullmatch(secrets[key]):
                    # (Sent, the HTTP client's error would quote the value escaped, past `_masked`.)
                    return Outcome(
                        500,
                        False,
                        f'Secret with key "{key}" holds a line break, a control or non-ASCII character: '
                        f'schedule header "{name}" cannot carry it.',
                    )
            resolved[name] = SECRET_PLACEHOLDER.sub(lambda match: secrets[match.group(1)], value)
        content = None
        if run.http_method != "GET":
            content = orjson.dumps(run.body if run.body is not None else {})
            if not any(name.lower() == "content-type" for name in resolved):
                resolved["Content-Type"] = "application/json"
        assert self._client is not None
        url = target_url(run.function_url, self._base_url)
        try:
            async with asyncio.timeout(self._settings.request_timeout_seconds):
                if run.url_set_by_agent:
                    status = await self._send_within_reach(run.http_method, url, resolved, content)
                else:
                    status = await self._send(self._client, run.http_method, url, resolved, content)
        except OutOfReach as exc:
            return Outcome(
                500,
                False,
                f"Not called: an agent key set this schedule's URL, and {exc}. A schedule an agent key sets "
                f"may call public addresses and this project's own URL ({self._reach.own_url}) only; "
                "an admin setting the URL lifts that.",
            )
        except Unresolved as exc:
            return Outcome(500, False, f"Connection failed: {exc}")
        except (TimeoutError, httpx.TimeoutException):
            limit = self._settings.request_timeout_seconds
            return Outcome(500, False, f"No answer within the time limit ({limit:g} s)")
        except httpx.HTTPError as exc:
            return Outcome(500, False, _masked(outbound.describe(exc), secrets))
        success = 200 <= status < 300
        return Outcome(status, success, "Success" if success else f"HTTP {status}")

    async def _send_within_reach(
        self, method: str, url: str, headers: Mapping[str, str], content: bytes | None
    ) -> int:
        """The call of a job whose URL an agent key set: the project's own URL as any; else the host
        resolved now, every address checked (`OutOfReach` if one is not public), and the request sent to the
        checked addresses in turn (the next one when one refuses the connection), by a client of its own."""
        addresses = await self._reach.checked(url)
        if addresses is None:
            assert self._client is not None
            return await self._send(self._client, method, url, headers, content)
        async with self._new_client() as client:
            for address in addresses[:-1]:
                with contextlib.suppress(httpx.ConnectError):
                    at, sent, extensions = dialled(url, address, headers)
                    return await self._send(client, method, at, sent, content, extensions)
            at, sent, extensions = dialled(url, addresses[-1], headers)
            return await self._send(client, method, at, sent, content, extensions)

    @staticmethod
    async def _send(
        client: httpx.AsyncClient,
        method: str,
        url: str | httpx.URL,
        headers: Mapping[str, str],
        content: bytes | None,
        extensions: Mapping[str, str] | None = None,
    ) -> int:
        """The call, its answer read up to `MAX_RESPONSE_BYTES` (the run's time limit bounds it outside)."""
        return await outbound.send(
            client,
            method,
            url,
            headers=headers,
            content=content,
            max_response_bytes=MAX_RESPONSE_BYTES,
            extensions=extensions,
        )

    async def _record(self, job_id: str, outcome: Outcome, duration_ms: int) -> None:
        """The run's log row, and the job freed for its next run (nothing when it was deleted meanwhile)."""
        async with self._database.as_owner() as cur:
            await cur.execute(
                "update schedules.jobs set last_executed_at = now(), running_until = null where id = %s "
                "returning id",
                (job_id,),
            )
            if await cur.fetchone() is None:
                return
            await cur.execute(
                "insert into schedules.job_logs (job_id, status_code, success, duration_ms, message) "
                "values (%s, %s, %s, %s, %s)",
                (job_id, outcome.status_code, outcome.success, duration_ms, outcome.message[:MAX_MESSAGE]),
            )

    async def prune(self) -> int:
        """Delete the job logs older than the configured retention (none when it is null); how many."""
        return await self._database.delete_in_batches(
            "delete from schedules.job_logs where id in (select l.id from schedules.job_logs l, "
            "schedules.config c where c.retention_days is not null "
            "and l.executed_at < now() - make_interval(days => c.retention_days) limit %s)",
            batch=PRUNE_BATCH,
        )
