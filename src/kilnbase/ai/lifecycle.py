"""The life of one gateway call, the same for every endpoint: prepare → reserve → call → settle → ledger.

`prepare` loads the policy snapshot (cached), refuses anon callers the policy does not admit, checks the
candidate models (the model, request fallbacks, the configuration's fallbacks) against the allow-lists and the
catalog, and prices the call. The endpoint flow then reserves its estimate against every limit, calls the
providers through `Failover`, and `finish`es: the reservation is settled with the real figures and the ledger
row queued, both off the request path. Whatever ends a call early (a limit's refusal, a provider's error, the
client leaving) is recorded by one context manager, `accounted`, so every flow bills failures the same way.
No HTTP objects here: the surfaces render what the flows return.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeVar

import orjson

from kilnbase.ai import limits, openai_shapes, requests
from kilnbase.ai.caller import Caller
from kilnbase.ai.catalog import ModelCatalog
from kilnbase.ai.errors import GatewayError
from kilnbase.ai.failover import Failover, ProviderCall
from kilnbase.ai.ledger import LedgerWriter, UsageRecord
from kilnbase.ai.policy import Configuration, PolicySnapshot, PolicyStore
from kilnbase.ai.pricing import NO_PRICE, CallPrice, Pricing, dearest
from kilnbase.ai.provider_routing import ProviderRouting, Target
from kilnbase.ai.redaction import Redactor
from kilnbase.config import Settings
from kilnbase.db.session import Database

T = TypeVar("T")


def estimate_prompt_tokens(payload: Any) -> int:
    """A deliberately generous estimate (about 3 bytes a token) used only to reserve quota."""
    return len(orjson.dumps(payload)) // 3 + 16


@dataclass
class Call:
    """One call on its way through the lifecycle."""

    caller: Caller
    #: Whose counters the call uses (made once: it is needed to price the call and to reserve).
    subject: limits.Subject
    body: dict[str, Any]
    candidates: list[str]
    snapshot: PolicySnapshot
    record: UsageRecord
    configuration: Configuration | None = None
    price: CallPrice = NO_PRICE
    reservation: limits.Reservation = field(default_factory=limits.Reservation)
    reserved: bool = False
    #: (prompt tokens, completion tokens) the reservation assumes.
    estimate: tuple[int, int] = (0, 0)
    started: float = field(default_factory=time.perf_counter)
    #: Time spent waiting on providers (all attempts), to report the gateway's own overhead.
    upstream_seconds: float = 0.0
    #: What the call has used so far, billed if it fails midway (an image call answers piece by piece).
    used: dict[str, Any] | None = None
    spent: Decimal | None = None
    images: int = 0


@dataclass
class Result:
    """A finished non-streaming answer in OpenAI's shape, plus the headers the surfaces add."""

    body: dict[str, Any]
    headers: dict[str, str]
    model: str


def admit_anon(caller: Caller, snapshot: PolicySnapshot) -> None:
    """Anon callers (the public anon key) reach models, the catalog included, only where the policy admits
    them."""
    if not caller.anonymous or snapshot.anon_access:
        return
    raise GatewayError(
        403,
        "Anon callers (the anon key) may not call models on this project. Call with a signed-in user's "
        "token, the API key or a gateway key; or an admin admits anon callers with PUT /api/ai/policy "
        '{"anonAccess": true} and limits them under /api/ai/limits/anon/*.',
        type_="permission_error",
        code="anon_not_allowed",
    )


class CallLifecycle:
    def __init__(
        self,
        *,
        settings: Settings,
        database: Callable[[], Database],
        policy: PolicyStore,
        catalog: ModelCatalog,
        routing: ProviderRouting,
        pricing: Pricing,
        failover: Failover,
        counters: limits.CounterStore,
        ledger: LedgerWriter,
        redactor: Redactor,
    ) -> None:
        self.settings = settings
        self.database = database
        self.policy = policy
        self.catalog = catalog
        self.routing = routing
        self.pricing = pricing
        self.failover = failover
        self.counters = counters
        self.ledger = ledger
        self.redact = redactor
        self._keys_seen_in: PolicySnapshot | None = None

    async def snapshot(self) -> PolicySnapshot:
        """The policy now; its keys join the redactor's whenever a new snapshot is loaded."""
        return self._seen(await self.policy.get(self.database()))

    def _seen(self, snapshot: PolicySnapshot) -> PolicySnapshot:
        if snapshot is not self._keys_seen_in:
            self.redact.remember(*snapshot.keys())
            self._keys_seen_in = snapshot
        return snapshot

    # -- prepare ---------------------------------------------------------------------------------------------
    async def prepare(
        self, caller: Caller, body: dict[str, Any], endpoint: str, fallbacks: list[str], started: float
    ) -> Call:
        snapshot = self._seen(await self.policy.get(self.database()))  # (`snapshot`, one frame fewer)
        admit_anon(caller, snapshot)
        model = body["model"]
        configuration = snapshot.configurations.get(model)
        candidates = [model, *fallbacks, *(configuration.fallback_models if configuration else ())]
        candidates = list(dict.fromkeys(candidates))
        requests.check_allowed(candidates, snapshot.allowed_models, "project")
        requests.check_allowed(candidates, caller.key_models, "gateway key")
        known: dict[str, CallPrice] = {}
        #: Unpriced candidates, as the ledger records who served them (provider, the provider's model id).
        unpriced: dict[str, tuple[str, str]] = {}
        for candidate in candidates:
            target = await self.routing.target(snapshot, candidate)
            via_openrouter = target.provider is self.routing.openrouter
            if via_openrouter:
                await self._check_listed(candidate, target)
            known[candidate] = price = self.pricing.known(snapshot, candidate, openrouter=via_openrouter)
            if price.price is None:
                unpriced[candidate] = (target.provider.name, target.model)
        subject = caller.subject
        if unpriced and limits.spend_capped(snapshot, subject):
            price = await self.pricing.with_learned(known, unpriced)
        else:
            price = dearest(known.values())
        record = UsageRecord(
            endpoint=endpoint,
            principal=caller.principal,
            user_id=caller.user_id,
            key_id=caller.key_id,
            requested_model=model,
            config_id=configuration.id if configuration else None,
        )
        return Call(
            caller=caller,
            subject=subject,
            body=body,
            candidates=candidates,
            snapshot=snapshot,
            record=record,
            configuration=configuration,
            price=price,
            started=started,
        )

    async def _check_listed(self, model: str, target: Target) -> None:
        """An id OpenRouter's catalog does not list is refused here (when the catalog could be loaded)."""
        await self.catalog.models(self.routing.openrouter, target.key)
        if self.catalog.is_loaded("openrouter") and self.catalog.lookup("openrouter", model) is None:
            raise GatewayError(
                400,
                f"Unknown model: {model}. GET /v1/models lists the models.",
                code="model_not_found",
                param="model",
            )

    # -- reserve, call ---------------------------------------------------------------------------------------
    async def reserve(self, call: Call, tokens: int, usd: Decimal) -> None:
        """Reserve the estimate against every applicable limit (429 or 402 reserving nothing). Call it inside
        `accounted`, which records a refusal."""
        call.reservation = await limits.reserve(self.counters, call.snapshot, call.subject, tokens, usd)
        call.reserved = True

    def call(self, call: Call, exchange: ProviderCall[T]) -> Coroutine[Any, Any, tuple[T, str, Target]]:
        """The providers' answer through `Failover` (the coroutine itself: no frame of its own)."""
        return self.failover.run(call, exchange)

    async def replay(self, call: Call, cached: dict[str, Any]) -> None:
        """Account for an answer served from the caller's cache: it still counts against the request rate
        limits (a request reserved with no tokens and no cost), and is recorded as a free hit."""
        with self.accounted(call):
            await self.reserve(call, 0, Decimal(0))
        call.record.cache_hit = True
        self.finish(call, "ok", usage=cached["usage"], cost=Decimal(0), http_status=200)

    def accounted(self, call: Call) -> Accounted:
        """Record a call that ends early, once: refused by a limit ('refused', nothing billed); failed with a
        GatewayError ('error', billed with what it used so far); ended by anything else, such as the client
        leaving, which cancels the task ('abandoned', billed with what it used, else the prompt's estimate).
        The error's message is redacted before anyone sees it."""
        return Accounted(self, call)

    # -- settle and write the ledger -------------------------------------------------------------------------
    def finish(
        self,
        call: Call,
        status: str,
        *,
        usage: dict[str, Any] | None = None,
        cost: Decimal | None = None,
        http_status: int | None = None,
        error: str | None = None,
        images: int = 0,
        ttft: float | None = None,
    ) -> None:
        """Settle the reservation and queue the ledger row. A cache hit consumed no provider tokens, so its
        settlement releases the (empty) reservation rather than charging the cached answer's tokens."""
        record = call.record
        normalized = openai_shapes.usage(usage)
        record.status = status
        record.http_status = http_status
        record.error = self.redact(error) if error else None
        record.input_tokens = normalized["prompt_tokens"]
        record.output_tokens = normalized["completion_tokens"]
        record.cached_tokens = normalized["prompt_tokens_details"]["cached_tokens"]
        record.image_count = images
        if cost is None:
            cost = openai_shapes.reported_cost(usage)
        ledger_price = call.price.for_ledger
        if cost is None and ledger_price is not None:
            cost = ledger_price.cost(record.input_tokens, record.output_tokens, images)
        record.cost_usd = cost or Decimal(0)
        record.created_at = datetime.now(UTC)
        record.latency_ms = int((time.perf_counter() - call.started) * 1000)
        record.ttft_ms = int(ttft * 1000) if ttft is not None else None
        tokens = 0 if record.cache_hit else record.input_tokens + record.output_tokens
        self.ledger.submit(record, call.reservation.settlement(tokens, record.cost_usd))


class Accounted:
    """`CallLifecycle.accounted`: a plain class, not a generator-based context manager, since it is on every
    call's path."""

    __slots__ = ("_call", "_lifecycle")

    def __init__(self, lifecycle: CallLifecycle, call: Call) -> None:
        self._lifecycle = lifecycle
        self._call = call

    def __enter__(self) -> Call:
        return self._call

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _trace: TracebackType | None
    ) -> None:
        if error is None:
            return
        call, lifecycle = self._call, self._lifecycle
        if isinstance(error, GatewayError):
            message = error.message = lifecycle.redact(error.message)
            error.args = (message,)
            lifecycle.finish(
                call,
                "error" if call.reserved else "refused",  # a limit refused it: nothing was reserved or spent
                usage=call.used,
                cost=call.spent if call.reserved else Decimal(0),
                http_status=error.status,
                error=message,
                images=call.images,
            )
        else:
            lifecycle.finish(
                call,
                "abandoned",
                usage=call.used or {"prompt_tokens": call.estimate[0]},
                cost=call.spent,
                error="the client went away",
                images=call.images,
            )
