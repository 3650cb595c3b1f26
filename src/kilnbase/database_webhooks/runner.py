"""The delivery runner: one task in each server process that POSTs the queued row changes to their webhooks.

InsForge sends from a LISTEN on `pg_notify`, so a change made while no listener runs (a restart, a lost
connection) is never sent. Here the table's trigger writes the change to `database_webhooks.outbox` in the
transaction that makes it, and this runner sends what is there.

**Claiming.** Due rows are read with `SELECT ... FOR UPDATE SKIP LOCKED`, and in the same transaction each
one's attempt is counted and `next_attempt_at` moved past the attempt's time limit (its lease). A second
process skips the locked rows, or finds them no longer due once the first commits: each attempt is claimed
by exactly one process. A process that dies mid-attempt frees its rows when their lease passes, so an
event may, rarely, reach its receiver twice: every request carries `X-InsForge-Delivery-Id`, the same on
each attempt, for a receiver to tell.

**Sleeping.** The loop sleeps until the soonest due row, by the database's clock, and is woken early by
`NOTIFY kilnbase_database_webhooks` (the trigger's, on commit: one per transaction however many rows it
changed) or by one of its own deliveries ending. Nothing polls: an idle server wakes only to delete old logs.

**A delivery** is InsForge's request: `POST` of `{event, table, record, old_record}` with `Content-Type:
application/json`, `X-InsForge-Event`, `X-InsForge-Table` and, for a webhook with a secret,
`X-InsForge-Signature: sha256=<hex>` (HMAC-SHA256 of the body with the secret, as InsForge signs it).
Time-limited, no redirects followed, at most `MAX_RESPONSE_BYTES` of the answer read. A 2xx answer is a
success; a network error, a timeout, 408, 429 and 5xx are tried again after a delay that doubles each time,
up to the configured attempts; any other answer (4xx, 3xx) is final. Each attempt writes one log row.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import psycopg
from psycopg.types.json import Jsonb

from kilnbase.config import DatabaseWebhooksSettings
from kilnbase.database_webhooks.service import secret_context
from kilnbase.db.claim_loop import ClaimLoop
from kilnbase.db.session import Database
from kilnbase.http import outbound
from kilnbase.keys.secret_box import SecretBox

log = logging.getLogger("kilnbase.database_webhooks")

CHANNEL = "kilnbase_database_webhooks"
#: Deliveries one process has under way at once, at most; more due rows wait for the next claim.
MAX_IN_FLIGHT = 64
#: The most of a receiver's answer read (and dropped: the log keeps only its status).
MAX_RESPONSE_BYTES = 64 * 1024
MAX_ERROR = 500
#: Added to an attempt's time limit for its lease: the log is written after the call ends.
LEASE_MARGIN_SECONDS = 30.0
#: Log rows deleted per statement by the retention sweep.
PRUNE_BATCH = 10_000
#: Answers tried again besides 5xx: the receiver timed out, or asks to slow down.
RETRIED_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class Claimed:
    id: int
    webhook_id: str
    event_type: str
    table_name: str
    payload: dict[str, Any]
    attempt: int
    url: str
    secret_ciphertext: str | None


@dataclass(frozen=True)
class Attempt:
    status_code: int | None
    error: str | None
    success: bool
    #: Worth trying again (a network error, a timeout, 408, 429, 5xx).
    retry: bool


def request_headers(claimed: Claimed, body: bytes, secret: str | None) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "X-InsForge-Event": claimed.event_type,
        "X-InsForge-Table": claimed.table_name,
        "X-InsForge-Delivery-Id": str(claimed.id),
    }
    if secret is not None:
        headers["X-InsForge-Signature"] = outbound.hmac_sha256(secret, body)
    return headers


class DeliveryRunner(ClaimLoop[Claimed]):
    def __init__(
        self, settings: DatabaseWebhooksSettings, database: Database, conninfo: str, box: SecretBox
    ) -> None:
        super().__init__(
            name="database-webhooks",
            channel=CHANNEL,
            conninfo=conninfo,
            max_in_flight=MAX_IN_FLIGHT,
            prune_seconds=settings.retention_sweep_seconds,
            log=log,
        )
        self._settings = settings
        self._database = database
        self._box = box
        self._client: httpx.AsyncClient | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The capability's background work: the claiming loop, with its HTTP client (closed once the
        deliveries under way were cancelled: their leases lapse, and another attempt is made)."""
        client = outbound.client(
            self._settings.request_timeout_seconds, self._settings.connect_timeout_seconds
        )
        async with client as self._client, self.claiming():
            yield

    def task_name(self, claimed: Claimed) -> str:
        return f"kilnbase-webhook-{claimed.id}"

    async def claim(self, most: int) -> list[Claimed]:
        """Claim up to `most` due rows, oldest first: each one's attempt counted and leased, in one
        transaction (see the module's docstring)."""
        if most <= 0:
            return []
        lease = self._settings.request_timeout_seconds + LEASE_MARGIN_SECONDS
        async with self._database.as_owner() as cur:
            await cur.execute(
                "with due as (select o.id from database_webhooks.outbox o where o.next_attempt_at <= now() "
                "order by o.id limit %s for update skip locked) "
                "update database_webhooks.outbox o set attempts = o.attempts + 1, "
                "next_attempt_at = now() + make_interval(secs => %s) from due, database_webhooks.hooks h "
                "where o.id = due.id and h.id = o.webhook_id "
                "returning o.id, o.webhook_id::text, o.event_type, o.table_name, o.payload, o.attempts, "
                "h.url, h.secret_ciphertext",
                (most, lease),
            )
            rows = await cur.fetchall()
        return [
            Claimed(
                row["id"],
                row["webhook_id"],
                row["event_type"],
                row["table_name"],
                row["payload"],
                row["attempts"],
                row["url"],
                row["secret_ciphertext"],
            )
            for row in sorted(rows, key=lambda row: int(row["id"]))
        ]

    async def seconds_to_next(self) -> float:
        """Until the soonest row that may be claimed, or the next retention sweep, whichever comes first."""
        async with self._database.as_owner() as cur:
            await cur.execute(
                "select extract(epoch from min(next_attempt_at) - clock_timestamp())::float8 as seconds "
                "from database_webhooks.outbox"
            )
            row = await cur.fetchone()
        return self.wake_in(row["seconds"] if row is not None else None)

    async def handle(self, claimed: Claimed) -> None:
        try:
            attempt = await self._post(claimed)
        except Exception as exc:  # the delivery fails, the runner goes on
            attempt = Attempt(None, outbound.describe(exc)[:MAX_ERROR], False, True)
        try:
            await self._record(claimed, attempt)
        except psycopg.Error as exc:
            log.warning("webhook delivery %s was made but not recorded: %s", claimed.id, type(exc).__name__)

    async def _post(self, claimed: Claimed) -> Attempt:
        secret = None
        if claimed.secret_ciphertext is not None:
            secret = self._box.decrypt(claimed.secret_ciphertext, context=secret_context(claimed.webhook_id))
        body = orjson.dumps(claimed.payload)
        assert self._client is not None
        try:
            status = await outbound.send(
                self._client,
                "POST",
                claimed.url,
                headers=request_headers(claimed, body, secret),
                content=body,
                timeout_seconds=self._settings.request_timeout_seconds,
                max_response_bytes=MAX_RESPONSE_BYTES,
            )
        except (TimeoutError, httpx.TimeoutException):
            limit = self._settings.request_timeout_seconds
            return Attempt(None, f"No answer within the time limit ({limit:g} s)", False, True)
        except httpx.HTTPError as exc:
            return Attempt(None, outbound.describe(exc)[:MAX_ERROR], False, True)
        if 200 <= status < 300:
            return Attempt(status, None, True, False)
        return Attempt(status, f"HTTP {status}", False, status >= 500 or status in RETRIED_STATUSES)

    def retry_delay(self, attempt: int) -> float:
        """The pause after failed attempt number `attempt` (1 for the first)."""
        delay = self._settings.retry_delay_seconds * 2 ** min(attempt - 1, 30)
        return float(min(delay, self._settings.max_retry_delay_seconds))

    async def _record(self, claimed: Claimed, attempt: Attempt) -> None:
        """The attempt's log row; the row out of the outbox when it is done (delivered, refused, or out of
        attempts), else due again after its delay. Nothing when the webhook was deleted meanwhile."""
        final = attempt.success or not attempt.retry or claimed.attempt >= self._settings.max_attempts
        error = attempt.error
        if not attempt.success and attempt.retry and final:
            error = f"{error} (gave up after {claimed.attempt} attempts)"
        async with self._database.as_owner() as cur:
            if final:
                await cur.execute("delete from database_webhooks.outbox where id = %s", (claimed.id,))
            else:
                await cur.execute(
                    "update database_webhooks.outbox set next_attempt_at = now() + make_interval(secs => %s) "
                    "where id = %s",
                    (self.retry_delay(claimed.attempt), claimed.id),
                )
            await cur.execute(
                "insert into database_webhooks.logs (webhook_id, delivery_id, attempt, event_type, "
                "table_name, payload, status_code, error, success) "
                "select id, %s, %s, %s, %s, %s, %s, %s, %s from database_webhooks.hooks where id = %s",
                (
                    claimed.id,
                    claimed.attempt,
                    claimed.event_type,
                    claimed.table_name,
                    Jsonb(claimed.payload),
                    attempt.status_code,
                    None if error is None else error[:MAX_ERROR],
                    attempt.success,
                    claimed.webhook_id,
                ),
            )

    async def prune(self) -> int:
        """Delete the delivery logs older than the retention; how many. (The outbox needs no sweep: each
        row leaves it when delivered or given up.)"""
        return await self._database.delete_in_batches(
            "delete from database_webhooks.logs where id in (select id from database_webhooks.logs "
            "where delivered_at < now() - make_interval(days => %s) limit %s)",
            (self._settings.log_retention_days,),
            batch=PRUNE_BATCH,
        )
