"""What a call will cost, so that a USD cap is reserved against before the call, for every kind of provider.

A price comes from, in order: the admin (`PUT /api/ai/prices/{model}`, for registered providers or to
override a catalog), OpenRouter's catalog, or, only when a USD limit applies and neither knows the model, the
ledger: the highest cost per token the model was billed at its provider over its recent calls (read through
the ledger's (model, created_at) index, so learning adds nothing to the ledger's writes). A model with no
price at all is refused under a USD cap (402, saying how to set one), since reserving $0 would let any burst
spend past the cap. The learned price is only for reservations; the ledger's own cost never comes from it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import NamedTuple

from kilnbase.ai.catalog import ModelCatalog, Price
from kilnbase.ai.errors import GatewayError
from kilnbase.ai.policy import PolicySnapshot
from kilnbase.db.session import Database

#: Seconds a learned price (or the lack of one) is kept before the ledger is read again.
_LEARNED_TTL = 60.0
_UNKNOWN_TTL = 5.0
#: How many recent calls of a model the learned price looks at.
_RECENT_CALLS = 200

LEARNED_PRICE_SQL = """
select max(rate) as rate from (
    select cost_usd / (input_tokens + output_tokens) as rate from ai.usage
    where model = %s and provider = %s and cost_usd > 0 and input_tokens + output_tokens > 0
    order by created_at desc limit %s
) recent
"""


class CallPrice(NamedTuple):
    """A price and where it came from (a tuple: one is made per candidate model of every call)."""

    price: Price | None
    #: "configured", "catalog" or "learned".
    source: str | None

    @property
    def for_ledger(self) -> Price | None:
        """The price the ledger may bill with when the provider reports no cost (never a learned one)."""
        return self.price if self.source in ("configured", "catalog") else None


NO_PRICE = CallPrice(None, None)


def dearest(prices: Iterable[CallPrice]) -> CallPrice:
    """The dearest of a call's candidates' prices (any candidate may end up serving the call)."""
    chosen = NO_PRICE
    for candidate in prices:
        price = candidate.price
        if price is not None and (
            chosen.price is None
            or (price.completion, price.prompt) > (chosen.price.completion, chosen.price.prompt)
        ):
            chosen = candidate
    return chosen


def unpriced(model: str) -> GatewayError:
    return GatewayError(
        402,
        f"No price is known for {model} and a USD spend cap applies, so its cost cannot be reserved. "
        f"An admin sets one with PUT /api/ai/prices/{model} "
        '{"inputPrice": ..., "outputPrice": ...} (USD per million tokens).',
        type_="insufficient_quota",
        code="model_price_unknown",
        headers={"x-should-retry": "false"},
    )


class Pricing:
    def __init__(self, catalog: ModelCatalog, database: Callable[[], Database]) -> None:
        self._catalog = catalog
        self._database = database
        self._learned: dict[tuple[str, str], tuple[float, Price | None]] = {}
        self._lock = asyncio.Lock()

    def known(self, snapshot: PolicySnapshot, model: str, *, openrouter: bool) -> CallPrice:
        """The configured or catalog price of one model, without I/O."""
        configured = snapshot.prices.get(model)
        if configured is not None:
            return CallPrice(configured, "configured")
        listed = self._catalog.price("openrouter", model) if openrouter else None
        return CallPrice(listed, "catalog") if listed is not None else NO_PRICE

    async def with_learned(
        self, known: Mapping[str, CallPrice], served_as: Mapping[str, tuple[str, str]]
    ) -> CallPrice:
        """The dearest price of a call under a USD cap, its unpriced candidates priced by the ledger (each
        as `served_as` says: the provider's name and its own model id); a candidate the ledger cannot price
        either refuses the call."""
        priced = []
        for model, candidate in known.items():
            if candidate.price is None:
                learned = await self.learned(*served_as[model])
                if learned is None:
                    raise unpriced(model)
                candidate = CallPrice(learned, "learned")
            priced.append(candidate)
        return dearest(priced)

    async def learned(self, provider: str, model: str) -> Price | None:
        """What calls of `model` at `provider` were billed per token lately, at the most."""
        key = (provider, model)
        cached = self._learned.get(key)
        if cached is not None and time.monotonic() < cached[0]:
            return cached[1]
        async with self._lock:
            cached = self._learned.get(key)
            if cached is not None and time.monotonic() < cached[0]:
                return cached[1]
            async with self._database().as_owner() as cur:
                await cur.execute(LEARNED_PRICE_SQL, (model, provider, _RECENT_CALLS))
                row = await cur.fetchone()
            rate = row["rate"] if row else None
            price = Price(rate, rate, Decimal(0), Decimal(0), None) if rate is not None else None
            if len(self._learned) > 10_000:
                self._learned.clear()
            ttl = _LEARNED_TTL if price is not None else _UNKNOWN_TTL
            self._learned[key] = (time.monotonic() + ttl, price)
            return price
