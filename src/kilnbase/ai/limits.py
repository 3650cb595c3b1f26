"""Quotas and rate limits, reserved before the call and settled after it, atomically in Postgres.

Every applicable limit (project, gateway key, user, anon client address) maps to fixed-window counters: a
minute (requests and tokens: rpm, tpm), a UTC day (tokens/day, USD/day) and a UTC month (USD/month). A
request reserves its estimate (prompt estimate + max output tokens for every choice, priced as `pricing.py`
says) in all of them with one call of `ai.reserve`, which increments each counter only if it stays within its
limit (`INSERT ... ON CONFLICT DO UPDATE ... WHERE`, so concurrent reservations serialise on the counter row,
across processes) and rolls everything back otherwise. After the call the difference between estimate and
actual is settled. A burst therefore cannot spend past a cap; the only overshoot possible is a provider
billing more than the estimate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import orjson
from psycopg import errors as pg_errors

from kilnbase.ai.errors import GatewayError
from kilnbase.ai.policy import LimitRule, PolicySnapshot
from kilnbase.db.session import Database


@dataclass(frozen=True)
class Subject:
    """Whose counters a request uses."""

    key_id: str | None
    user_id: str | None
    #: Set for anon callers: their own limits are counted per client address.
    anon_address: str | None = None
    #: Set for agent keys: their model budget (`agent/<id>`, else `agent/*`).
    agent_id: str | None = None


@dataclass
class Reservation:
    items: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0
    usd: Decimal = Decimal(0)

    def settlement(self, tokens: int, usd: Decimal) -> list[dict[str, Any]]:
        """Counter corrections that replace the estimate with the actual figures."""
        dt, du = tokens - self.tokens, usd - self.usd
        if not self.items or (dt == 0 and du == 0):
            return []
        return [
            {
                "scope": i["scope"],
                "subject": i["subject"],
                "window": i["window"],
                "start": i["start"],
                "tokens": dt,
                "usd": str(du),
            }
            for i in self.items
        ]


def _windows(now: float) -> dict[str, tuple[str, float]]:
    moment = datetime.fromtimestamp(now, UTC)
    minute = moment.replace(second=0, microsecond=0)
    day = minute.replace(hour=0, minute=0)
    month = day.replace(day=1)
    next_minute = minute.timestamp() + 60
    return {
        "minute": (minute.isoformat(), next_minute - now),
        "day": (day.isoformat(), day.timestamp() + 86400 - now),
        "month": (month.isoformat(), 0.0),
    }


def applicable_rules(snapshot: PolicySnapshot, subject: Subject) -> list[tuple[LimitRule, str]]:
    """(rule, counter subject) pairs: project, then key, then user (a user's own row, else the default), then
    agent key (likewise), then anon (an address's own row, else the default, counted per address)."""
    rules: list[tuple[LimitRule, str]] = []
    project = snapshot.limits.get(("project", "*"))
    if project:
        rules.append((project, "*"))
    if subject.key_id:
        key_rule = snapshot.limits.get(("key", subject.key_id))
        if key_rule:
            rules.append((key_rule, subject.key_id))
    if subject.user_id:
        user_rule = snapshot.limits.get(("user", subject.user_id)) or snapshot.limits.get(("user", "*"))
        if user_rule:
            rules.append((user_rule, subject.user_id))
    if subject.agent_id is not None:
        agent_rule = snapshot.limits.get(("agent", subject.agent_id)) or snapshot.limits.get(("agent", "*"))
        if agent_rule:
            rules.append((agent_rule, subject.agent_id))
    if subject.anon_address is not None:
        anon_rule = snapshot.limits.get(("anon", subject.anon_address)) or snapshot.limits.get(("anon", "*"))
        if anon_rule:
            rules.append((anon_rule, subject.anon_address))
    return rules


def spend_capped(snapshot: PolicySnapshot, subject: Subject) -> bool:
    """Whether a USD limit applies to this subject (then a reservation needs a price)."""
    return any(
        rule.usd_per_day is not None or rule.usd_per_month is not None
        for rule, _ in applicable_rules(snapshot, subject)
    )


def _rate_limited(scope: str, what: str, retry_after: float) -> GatewayError:
    seconds = max(1, math.ceil(retry_after))
    return GatewayError(
        429,
        f"Rate limit reached: {what} per minute for this {scope}. Retry after {seconds}s.",
        type_="rate_limit_error",
        code="rate_limit_exceeded",
        headers={"retry-after": str(seconds)},
    )


def _quota_exceeded(scope: str, what: str, spend: bool) -> GatewayError:
    return GatewayError(
        402,
        f"{'Spend cap' if spend else 'Quota'} reached: {what} for this {scope}.",
        type_="insufficient_quota",
        code="spend_limit_exceeded" if spend else "quota_exceeded",
        headers={"x-should-retry": "false"},
    )


def _check_single(rule: LimitRule, tokens: int, usd: Decimal, windows: dict[str, tuple[str, float]]) -> None:
    """A request whose own estimate passes a limit can never be served; say so without touching counters."""
    if rule.rpm == 0:
        raise _rate_limited(rule.scope, "requests", windows["minute"][1])
    if rule.tpm is not None and tokens > rule.tpm:
        raise _rate_limited(
            rule.scope, f"tokens (this request may use {tokens}, more than {rule.tpm})", windows["minute"][1]
        )
    if rule.tokens_per_day is not None and tokens > rule.tokens_per_day:
        raise _quota_exceeded(rule.scope, "tokens per day", spend=False)
    if rule.usd_per_day is not None and usd > rule.usd_per_day:
        raise _quota_exceeded(rule.scope, "USD per day", spend=True)
    if rule.usd_per_month is not None and usd > rule.usd_per_month:
        raise _quota_exceeded(rule.scope, "USD per month", spend=True)


def _items(
    rule: LimitRule, subject: str, tokens: int, usd: Decimal, windows: dict[str, tuple[str, float]]
) -> list[dict[str, Any]]:
    base = {"scope": rule.scope, "subject": subject, "tokens": tokens, "usd": str(usd)}
    items: list[dict[str, Any]] = []
    if rule.rpm is not None or rule.tpm is not None:
        items.append(
            {
                **base,
                "window": "minute",
                "start": windows["minute"][0],
                "max_requests": rule.rpm,
                "max_tokens": rule.tpm,
            }
        )
    if rule.tokens_per_day is not None or rule.usd_per_day is not None:
        items.append(
            {
                **base,
                "window": "day",
                "start": windows["day"][0],
                "max_tokens": rule.tokens_per_day,
                "max_usd": None if rule.usd_per_day is None else str(rule.usd_per_day),
            }
        )
    if rule.usd_per_month is not None:
        items.append(
            {**base, "window": "month", "start": windows["month"][0], "max_usd": str(rule.usd_per_month)}
        )
    return items


class CounterStore(Protocol):
    """Where the counters live: Postgres by default, Redis when configured (see `counters_redis.py`)."""

    async def reserve(self, items: list[dict[str, Any]]) -> int | None:
        """Increment every counter if all stay within their limits; else change nothing and return the index
        of the first item that would pass its limit."""
        ...

    async def current(self, item: dict[str, Any]) -> tuple[int, int, Decimal]:
        """(requests, tokens, usd) of one counter."""
        ...

    async def settle(self, corrections: list[dict[str, Any]]) -> None: ...

    async def close(self) -> None:
        """Let go of what the store holds open (its connections)."""
        ...


class PostgresCounters:
    """`ai.counters`, reserved through `ai.reserve` (one statement) and settled in the ledger's round trip."""

    def __init__(self, database: Callable[[], Database]) -> None:
        self._database = database

    async def reserve(self, items: list[dict[str, Any]]) -> int | None:
        try:
            async with self._database().as_owner() as cur:
                await cur.execute("select ai.reserve(%s::jsonb)", (orjson.dumps(items).decode(),))
        except pg_errors.RaiseException as exc:
            return int(exc.diag.message_primary or 0)
        return None

    async def current(self, item: dict[str, Any]) -> tuple[int, int, Decimal]:
        async with self._database().as_owner() as cur:
            await cur.execute(
                "select requests, tokens, usd from ai.counters where scope = %s and subject = %s "
                "and window_kind = %s and window_start = %s::timestamptz",
                (item["scope"], item["subject"], item["window"], item["start"]),
            )
            row = await cur.fetchone()
        return (row["requests"], row["tokens"], row["usd"]) if row else (0, 0, Decimal(0))

    async def settle(self, corrections: list[dict[str, Any]]) -> None:
        async with self._database().owner_pool.connection() as conn:
            await conn.execute(SETTLE_SQL, (orjson.dumps(corrections).decode(),))

    async def close(self) -> None:
        """Nothing of its own: it borrows the owner pool's connections."""

    async def prune(self, batch: int = 5000) -> int:
        """Delete counters whose window is long over, a bounded batch at a time (never one huge delete)."""
        async with self._database().owner_pool.connection() as conn:
            cur = await conn.execute(PRUNE_SQL, (batch,))
            return cur.rowcount


async def reserve(
    store: CounterStore, snapshot: PolicySnapshot, subject: Subject, tokens: int, usd: Decimal
) -> Reservation:
    """Reserve the estimate everywhere, or raise 429 (rate) / 402 (quota, spend) reserving nothing."""
    rules = applicable_rules(snapshot, subject)
    if not rules:
        return Reservation()
    now = time.time()
    windows = _windows(now)
    items: list[dict[str, Any]] = []
    for rule, counter_subject in rules:
        _check_single(rule, tokens, usd, windows)
        items.extend(_items(rule, counter_subject, tokens, usd, windows))
    refused = await store.reserve(items)
    if refused is not None:
        raise await _explain(store, items[refused], windows)
    return Reservation(items=items, tokens=tokens, usd=usd)


async def _explain(
    store: CounterStore, item: dict[str, Any], windows: dict[str, tuple[str, float]]
) -> GatewayError:
    """Which limit of the refused counter would have been passed (429 for a minute, 402 otherwise)."""
    requests, tokens, _usd = await store.current(item)
    scope = item["scope"]
    if item["window"] == "minute":
        max_requests = item.get("max_requests")
        what = "requests" if max_requests is not None and requests + 1 > max_requests else "tokens"
        return _rate_limited(scope, what, windows["minute"][1])
    max_tokens = item.get("max_tokens")
    if item["window"] == "day" and max_tokens is not None and tokens + item["tokens"] > max_tokens:
        return _quota_exceeded(scope, "tokens per day", spend=False)
    return _quota_exceeded(scope, f"USD per {item['window']}", spend=True)


SETTLE_SQL = """
update ai.counters c set tokens = c.tokens + d.tokens, usd = c.usd + d.usd
from (
    select scope, subject, "window", start, sum(tokens) as tokens, sum(usd) as usd
    from jsonb_to_recordset(%s::jsonb) as x(scope text, subject text, "window" text, start timestamptz,
                                            tokens bigint, usd numeric)
    group by 1, 2, 3, 4
) d
where c.scope = d.scope and c.subject = d.subject and c.window_kind = d."window" and c.window_start = d.start
"""

PRUNE_SQL = """
delete from ai.counters where ctid in (
    select ctid from ai.counters
    where (window_kind = 'minute' and window_start < now() - interval '5 minutes')
       or (window_kind = 'day' and window_start < now() - interval '3 days')
       or (window_kind = 'month' and window_start < now() - interval '70 days')
    limit %s
)
"""
