"""The messaging worker: one in each server process, sending the outbox's due messages through the
project's SMTP server.

InsForge's design, on Kilnbase's claim loop (`db/claim_loop.py`):

**Claiming.** Due `pending` rows are taken with `FOR UPDATE SKIP LOCKED` and, in the same statement, marked
`claimed` by this worker with a fresh claim token and a lease (`KILNBASE_MESSAGING_LEASE_SECONDS`): each
attempt is claimed by exactly one worker. While it sends, the worker renews the lease every half of it.
Marking the outcome names the claim token, so a worker that lost its message (its lease ran out and another
worker took it) changes nothing.

**Reclaiming.** A `claimed` row whose lease ran out belongs to a worker that stopped (a crash, a killed
process): before each claim, such rows count a failed attempt ("Lease expired ...") and are due again
after the backoff, or move to the dead-letter table once out of attempts (InsForge's `reconcile_jobs`). The
email may have gone out before the worker stopped, so it may, rarely, arrive twice.

**Sleeping.** Until the soonest pending row or lease end, woken early by `NOTIFY kilnbase_messaging` (sent
by a send or a retry on commit), and never longer than `KILNBASE_MESSAGING_POLL_SECONDS` (InsForge's poll:
what arrived without a NOTIFY is found within it).

**An attempt** sends the message through the SMTP server configured now (`email/smtp_config.py`). The SMTP
server taking it marks it `sent`. Any failure counts an attempt: the message is due again after
`backoff_base_seconds * 2^(failed attempts - 1)` (at most `max_backoff_seconds`), and moves to the
dead-letter table once its attempts reach `max_retries`, or at once when the SMTP server refused the
recipient or the sender for good (a 5xx reply: trying again cannot help). Errors are Kilnbase's words with
the SMTP reply code (`smtp.failure_of`), never the server's reply text; message bodies are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg

from kilnbase.config import MessagingSettings
from kilnbase.db.claim_loop import ClaimLoop
from kilnbase.db.session import Database
from kilnbase.email import smtp, smtp_config
from kilnbase.keys.secret_box import SecretBox
from kilnbase.messaging.service import CHANNEL

log = logging.getLogger("kilnbase.messaging")

#: Messages one process sends at once, at most.
MAX_IN_FLIGHT = 8
MAX_ERROR = 1000
#: Rows deleted per statement by the retention sweep.
PRUNE_BATCH = 10_000
LEASE_EXPIRED = "Lease expired: the worker sending it stopped before it finished (orphan recovery)"


@dataclass(frozen=True)
class Claimed:
    id: str
    to: str
    subject: str
    body: str
    retry_count: int
    claim_token: str


@dataclass(frozen=True)
class Outcome:
    #: None: the SMTP server took the message.
    error: str | None = None
    #: Trying again cannot help (the SMTP server refused for good): straight to the dead-letter table.
    final: bool = False


#: A failed attempt: the row out of the outbox into the dead-letter table when it is its last (or `final`),
#: else pending again after the backoff; one attempt row either way. `{which}` picks the rows.
_FAIL = """
with failed as (
    select id, claimed_by, retry_count from messaging.outbox where {which} for update skip locked
), dead as (
    delete from messaging.outbox o using failed f
    where o.id = f.id and (o.retry_count + 1 >= o.max_retries or %(final)s)
    returning o.id, o.channel, o.payload, o.idempotency_key, o.retry_count, o.max_retries, o.created_at
), moved as (
    insert into messaging.dead_letter (id, channel, payload, idempotency_key, retry_count, max_retries,
        error_message, created_at)
    select id, channel, payload, idempotency_key, retry_count + 1, max_retries, %(error)s, created_at
    from dead
), retried as (
    update messaging.outbox o set status = 'pending', retry_count = o.retry_count + 1, claimed_by = null,
        claimed_at = null, lease_expires_at = null, claim_token = null, error_message = %(error)s,
        next_attempt_at = now() + make_interval(secs => least(%(base)s * power(2, o.retry_count), %(most)s)),
        updated_at = now()
    from failed f where o.id = f.id and not (o.retry_count + 1 >= o.max_retries or %(final)s)
    returning o.id
), attempts as (
    insert into messaging.delivery_attempts (message_id, attempt_number, worker_id, status, error_message,
        duration_ms)
    select id, retry_count + 1, coalesce(claimed_by, %(worker)s), 'failed', %(error)s, %(duration)s
    from failed
)
select (select count(*) from dead) as dead, (select count(*) from retried) as retried
"""


def worker_id() -> str:
    """This process's worker, as InsForge names one, with the process id for an operator."""
    return f"worker-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class MessageRunner(ClaimLoop[Claimed]):
    def __init__(
        self, settings: MessagingSettings, database: Database, conninfo: str, box: SecretBox
    ) -> None:
        super().__init__(
            name="messaging",
            channel=CHANNEL,
            conninfo=conninfo,
            max_in_flight=MAX_IN_FLIGHT,
            prune_seconds=settings.retention_sweep_seconds,
            log=log,
        )
        self._settings = settings
        self._database = database
        self._box = box
        self.worker_id = worker_id()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The capability's background work: the claiming loop (on the way out, the sends under way are
        cancelled; their leases run out and another worker, or this one's next start, sends them)."""
        async with self.claiming():
            yield

    def task_name(self, item: Claimed) -> str:
        return f"kilnbase-message-{item.id}"

    def _backoff(self) -> dict[str, Any]:
        return {"base": self._settings.backoff_base_seconds, "most": self._settings.max_backoff_seconds}

    async def reclaim_expired(self) -> int:
        """Rows whose worker's lease ran out: a failed attempt each (see the module's docstring)."""
        async with self._database.as_owner() as cur:
            await cur.execute(
                _FAIL.format(which="status = 'claimed' and lease_expires_at <= now()"),
                {
                    "final": False,
                    "error": LEASE_EXPIRED,
                    "worker": "orphan-recovery",
                    "duration": None,
                    **self._backoff(),
                },
            )
            row = await cur.fetchone()
        reclaimed = int(row["dead"]) + int(row["retried"]) if row is not None else 0
        if reclaimed:
            log.warning("messaging: %d message(s) reclaimed from a worker whose lease ran out", reclaimed)
        return reclaimed

    async def claim(self, most: int) -> list[Claimed]:
        """Reclaim the expired leases, then claim up to `most` due messages, the longest due first."""
        await self.reclaim_expired()
        if most <= 0:
            return []
        async with self._database.as_owner() as cur:
            await cur.execute(
                "with due as (select id from messaging.outbox where status = 'pending' "
                "and next_attempt_at <= now() order by next_attempt_at, created_at limit %s "
                "for update skip locked) "
                "update messaging.outbox o set status = 'claimed', claimed_by = %s, claimed_at = now(), "
                "lease_expires_at = now() + make_interval(secs => %s), claim_token = gen_random_uuid(), "
                "updated_at = now() from due where o.id = due.id "
                "returning o.id::text, o.payload, o.retry_count, o.claim_token::text, o.next_attempt_at",
                (most, self.worker_id, self._settings.lease_seconds),
            )
            rows = await cur.fetchall()
        return [
            Claimed(
                row["id"],
                str(row["payload"].get("to", "")),
                str(row["payload"].get("subject", "")),
                str(row["payload"].get("body", "")),
                row["retry_count"],
                row["claim_token"],
            )
            for row in sorted(rows, key=lambda row: row["next_attempt_at"])
        ]

    async def seconds_to_next(self) -> float:
        """Until the soonest pending row or lease end, the next sweep, or the next poll: the first of them."""
        async with self._database.as_owner() as cur:
            await cur.execute(
                "select extract(epoch from least("
                "(select min(next_attempt_at) from messaging.outbox where status = 'pending'), "
                "(select min(lease_expires_at) from messaging.outbox where status = 'claimed')"
                ") - clock_timestamp())::float8 as seconds"
            )
            row = await cur.fetchone()
        return min(self.wake_in(row["seconds"] if row is not None else None), self._settings.poll_seconds)

    async def handle(self, item: Claimed) -> None:
        started = time.monotonic()
        renewing = asyncio.create_task(self._renew(item), name=f"kilnbase-message-lease-{item.id}")
        try:
            outcome = await self._send(item)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        duration = int((time.monotonic() - started) * 1000)
        try:
            await self._record(item, outcome, duration)
        except psycopg.Error as exc:
            # (When it was sent: its lease runs out, and it is sent again. Better twice than never.)
            log.warning("message %s: its attempt was not recorded: %s", item.id, type(exc).__name__)

    async def _renew(self, item: Claimed) -> None:
        """Keep the lease while the message is being sent: renewed every half of it."""
        every = self._settings.lease_seconds / 2
        while True:
            await asyncio.sleep(every)
            try:
                async with self._database.as_owner() as cur:
                    await cur.execute(
                        "update messaging.outbox set lease_expires_at = now() + make_interval(secs => %s), "
                        "updated_at = now() where id = %s and claim_token = %s and status = 'claimed'",
                        (self._settings.lease_seconds, item.id, item.claim_token),
                    )
                    renewed = cur.rowcount
            except psycopg.Error as exc:
                log.warning("message %s: its lease was not renewed: %s", item.id, type(exc).__name__)
                continue
            if not renewed:
                log.warning("message %s: its lease was lost to another worker while sending", item.id)
                return

    async def _send(self, item: Claimed) -> Outcome:
        async with self._database.as_owner() as cur:
            server = smtp_config.server_of(await smtp_config.load(cur), self._box)
        if server is None:
            return Outcome("Email is not configured on this project (SMTP): the message could not be sent")
        email = smtp.OutgoingEmail(to=item.to, subject=item.subject, html=item.body)
        try:
            refused = await smtp.send(server, email)
        except OSError as exc:  # (smtplib's errors are OSErrors)
            failure = smtp.failure_of(exc)
            reply = f" (SMTP reply {failure.code})" if failure.code is not None else ""
            final = failure.kind == "refused" and failure.code is not None and 500 <= failure.code < 600
            log.warning(
                "message %s: send failed",
                item.id,
                extra={
                    "fields": {"smtp_host": server.host, "error": type(exc).__name__, "code": failure.code}
                },
            )
            return Outcome(f"Failed to send email via SMTP: {failure.summary}{reply}", final)
        except Exception as exc:  # the attempt fails, the worker goes on
            log.exception("message %s: send failed unexpectedly", item.id)
            return Outcome(f"Failed to send email: {type(exc).__name__}")
        if refused:
            codes = " ".join(str(code) for code in sorted({each.code for each in refused}))
            return Outcome(f"Failed to send email via SMTP: the server refused the recipient ({codes})")
        return Outcome()

    async def _record(self, item: Claimed, outcome: Outcome, duration: int) -> None:
        """The attempt's outcome, under the claim token: nothing changes when another worker took it."""
        async with self._database.as_owner() as cur:
            if outcome.error is None:
                await cur.execute(
                    "with sent as (update messaging.outbox set status = 'sent', "
                    "provider_message_id = id::text, claimed_by = null, claimed_at = null, "
                    "lease_expires_at = null, claim_token = null, "
                    "next_attempt_at = null, sent_at = now(), updated_at = now() "
                    "where id = %(id)s and claim_token = %(token)s and status = 'claimed' "
                    "returning id, retry_count) "
                    "insert into messaging.delivery_attempts (message_id, attempt_number, worker_id, status, "
                    "provider_message_id, duration_ms) "
                    "select id, retry_count + 1, %(worker)s, 'sent', id::text, %(duration)s from sent",
                    {
                        "id": item.id,
                        "token": item.claim_token,
                        "worker": self.worker_id,
                        "duration": duration,
                    },
                )
                return
            await cur.execute(
                _FAIL.format(which="id = %(id)s and claim_token = %(token)s and status = 'claimed'"),
                {
                    "id": item.id,
                    "token": item.claim_token,
                    "final": outcome.final,
                    "error": outcome.error[:MAX_ERROR],
                    "worker": self.worker_id,
                    "duration": duration,
                    **self._backoff(),
                },
            )

    async def prune(self) -> int:
        """Delete sent messages and attempts older than the retention, and dead letters older than theirs
        (`dead_letter_retention_days`, counted from when they moved there); how many. Pending messages stay
        until they are sent or dead: nobody could retry a message that no table holds any more."""
        days = (self._settings.retention_days,)
        dead = await self._database.delete_in_batches(
            "delete from messaging.dead_letter where id in (select id from messaging.dead_letter "
            "where moved_at < now() - make_interval(days => %s) limit %s)",
            (self._settings.dead_letter_retention_days,),
            batch=PRUNE_BATCH,
        )
        sent = await self._database.delete_in_batches(
            "delete from messaging.outbox where id in (select id from messaging.outbox where status = 'sent' "
            "and sent_at < now() - make_interval(days => %s) limit %s)",
            days,
            batch=PRUNE_BATCH,
        )
        attempts = await self._database.delete_in_batches(
            "delete from messaging.delivery_attempts where id in (select id from messaging.delivery_attempts "
            "where attempted_at < now() - make_interval(days => %s) limit %s)",
            days,
            batch=PRUNE_BATCH,
        )
        return sent + attempts + dead
