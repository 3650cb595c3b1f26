"""Quota counters in Redis, for deployments that configure it (`KILNBASE_AI_REDIS_URL` or `REDIS_URL`).

Same contract as the Postgres store: a reservation checks every counter and increments them all, or none, in
one Lua script (Redis runs a script atomically, so concurrent reservations from any number of processes
serialise). USD is kept as integer nano-dollars so that sums are exact. Each counter expires after its window.

While Redis cannot be reached, a call that a limit applies to is refused with a 503 (`limits_unavailable`):
a spend cap is never lifted, and starting fresh counters elsewhere would lift it. Calls no limit applies to
go on.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from kilnbase.ai.errors import GatewayError
from kilnbase.redis_client import REDIS_DOWN, connect_redis

_NANO = Decimal(1_000_000_000)
_TTL = {"minute": 120, "day": 2 * 86400, "month": 32 * 86400}

_RESERVE = """
local items = cjson.decode(ARGV[1])
for i, item in ipairs(items) do
  local requests = tonumber(redis.call('HGET', KEYS[i], 'requests') or '0')
  local tokens = tonumber(redis.call('HGET', KEYS[i], 'tokens') or '0')
  local usd = tonumber(redis.call('HGET', KEYS[i], 'usd') or '0')
  if item.max_requests and requests + 1 > item.max_requests then return i end
  if item.max_tokens and tokens + item.tokens > item.max_tokens then return i end
  if item.max_usd and usd + item.usd > item.max_usd then return i end
end
for i, item in ipairs(items) do
  redis.call('HINCRBY', KEYS[i], 'requests', 1)
  redis.call('HINCRBY', KEYS[i], 'tokens', item.tokens)
  redis.call('HINCRBY', KEYS[i], 'usd', item.usd)
  redis.call('EXPIRE', KEYS[i], item.ttl)
end
return 0
"""


def _key(item: dict[str, Any]) -> str:
    return f"kilnbase:ai:counter:{item['scope']}:{item['subject']}:{item['window']}:{item['start']}"


def _nano(value: Any) -> int:
    return int(Decimal(str(value)) * _NANO)


class RedisCounters:
    def __init__(self, url: str) -> None:
        self._redis = connect_redis(url)
        self._script = self._redis.register_script(_RESERVE)

    async def reserve(self, items: list[dict[str, Any]]) -> int | None:
        payload = []
        for item in items:
            entry: dict[str, Any] = {
                "tokens": int(item["tokens"]),
                "usd": _nano(item["usd"]),
                "ttl": _TTL[item["window"]],
            }
            if item.get("max_requests") is not None:
                entry["max_requests"] = int(item["max_requests"])
            if item.get("max_tokens") is not None:
                entry["max_tokens"] = int(item["max_tokens"])
            if item.get("max_usd") is not None:
                entry["max_usd"] = _nano(item["max_usd"])
            payload.append(entry)
        try:
            refused = int(await self._script(keys=[_key(i) for i in items], args=[orjson.dumps(payload)]))
        except REDIS_DOWN:
            # Limits are never lifted: with the counters out of reach, a call that a limit applies to waits.
            raise GatewayError(
                503,
                "The gateway's usage limits cannot be checked (its Redis cannot be reached). Try again soon.",
                type_="api_error",
                code="limits_unavailable",
            ) from None
        return refused - 1 if refused else None

    async def close(self) -> None:
        await self._redis.aclose()

    async def current(self, item: dict[str, Any]) -> tuple[int, int, Decimal]:
        values = await self._redis.hgetall(_key(item))
        return (
            int(values.get(b"requests", 0)),
            int(values.get(b"tokens", 0)),
            Decimal(int(values.get(b"usd", 0))) / _NANO,
        )

    async def settle(self, corrections: list[dict[str, Any]]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for correction in corrections:
                key = _key(correction)
                pipe.hincrby(key, "tokens", int(correction["tokens"]))
                pipe.hincrby(key, "usd", _nano(correction["usd"]))
            await pipe.execute()
