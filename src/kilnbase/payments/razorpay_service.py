"""The service behind `/api/payments/razorpay/...` and `/api/webhooks/razorpay/:environment`: Razorpay
payments as InsForge offers them (`backend/src/services/payments/razorpay/`), for the test and live
environments, on the layers every provider shares (`provider_state.py`, `webhook_log.py`, `mirror_upsert.py`,
`customer_mappings.py`): the same encrypted key table, connection rows, payment history, customer
mappings, webhook event log, audit module and access rules as Stripe's.

Paths, shapes, codes and messages are InsForge's. Where Kilnbase differs, on purpose (as for Stripe):

- The key id, key secret and webhook secret are stored encrypted with the project's SecretBox in a table no
  request role reads; `GET .../config` answers the key id masked and the secrets as `****` when set, where
  InsForge answers all three in full. Setting, removing or reading them, and the webhook setup (which hands
  out the webhook secret: whoever has it can forge events), are a person's: agent keys are refused.
- Orders are written as the caller under Row Level Security that by default lets a user pay for no billing
  subject or for their own, and the anon key only for none; subscriptions are created and managed as the
  caller's policies allow (by default the user's own subject), as InsForge's probes ask.
- The webhook receiver answers 503 (Razorpay retries) while no webhook secret is set, where InsForge
  answers 500; an event is recorded and applied in one transaction, so a retry of a processed one changes
  nothing.

Every change an admin makes, and every refused one, is audited (module `PAYMENTS`), a key only as its mask.
"""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal

import orjson
import psycopg
from psycopg import AsyncCursor
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from kilnbase import audit
from kilnbase.config import Settings
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError, require_admin_actor, require_person
from kilnbase.identity.actor import Actor
from kilnbase.keys.secret_box import SecretBox
from kilnbase.payments import (
    customer_mappings,
    customer_mirror,
    event_outcome,
    razorpay_events,
    razorpay_mirror,
    razorpay_shapes,
)
from kilnbase.payments import razorpay_definitions as rules
from kilnbase.payments.definitions import ENVIRONMENTS, Environment
from kilnbase.payments.mirror import integer, text
from kilnbase.payments.mirror_upsert import delete_unlisted
from kilnbase.payments.provider_state import Profile, ProviderState
from kilnbase.payments.razorpay_api import (
    RazorpayApi,
    order_signature_matches,
    subscription_signature_matches,
    webhook_signature_matches,
)
from kilnbase.payments.webhook_log import ReceivedEvent, record_and_apply

MODULE = "PAYMENTS"
_AGENT_REFUSAL = (
    "Agent keys may not set, read or remove the Razorpay keys or its webhook secret: a key decides whose "
    "Razorpay account takes the payments, and the webhook secret lets its holder forge payment events."
)
_ASK_A_PERSON = "Ask the project admin to do it (with the project's API key or the dashboard)."
RAZORPAY = Profile(
    name="razorpay",
    account=("merchantName", "account_name"),
    api_key_context="key_secret",
    own_tables=("razorpay_subscriptions", "razorpay_orders", "razorpay_plans", "razorpay_items"),
)
_EMPTY_COUNTS = {"plans": 0, "items": 0, "customers": 0, "subscriptions": 0, "invoices": 0, "payments": 0}
_NO_USER = "Sign in and send the user's access token (or call it server-side with the project's API key)."


def not_configured(environment: Environment) -> ApiError:
    return ApiError(
        400,
        "PAYMENT_CONFIG_NOT_FOUND",
        f"Razorpay {environment} keys are not configured",
        f"The project admin sets them with PUT /api/payments/razorpay/{environment}/config "
        "{keyId, keySecret}.",
    )


def webhook_url(settings: Settings, environment: Environment) -> str:
    return f"{settings.base_url}/api/webhooks/razorpay/{environment}"


class _Probe(Exception):
    """Rolls back a transaction that only asked Row Level Security a question."""


class Razorpay:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        box: SecretBox,
        limit_sessions: Callable[[Actor], Awaitable[None]],
    ) -> None:
        self._settings = settings
        self._database = database
        self._box = box
        self._limit_sessions = limit_sessions
        self._state = ProviderState(database, box, RAZORPAY)

    # -- keys ------------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _mirroring(self) -> AsyncIterator[AsyncCursor[DictRow]]:
        """The owner's cursor for writing what Razorpay answered: a value the tables cannot hold (an amount
        past bigint) makes Razorpay's answer unusable, a 502 naming it, not a server error."""
        try:
            async with self._database.as_owner() as cur:
                yield cur
        except psycopg.errors.DataError as exc:
            raise ApiError(
                502,
                "UPSTREAM_FAILURE",
                f"Razorpay answered a value Kilnbase cannot store: {exc.diag.message_primary or exc}",
                "Check the entity in Razorpay's dashboard (its amounts and counts), then try again.",
            ) from None

    def _api(self, key_id: str, key_secret: str) -> RazorpayApi:
        return RazorpayApi(
            self._settings.razorpay_api_base, key_id, key_secret, self._settings.razorpay_timeout_seconds
        )

    async def _keys(self, environment: Environment) -> tuple[str, str]:
        stored = await self._state.secrets(environment)
        if stored is None:
            raise not_configured(environment)
        fix = f"Set the keys again with PUT /api/payments/razorpay/{environment}/config {{keyId, keySecret}}."
        return (
            self._state.open(
                environment,
                "key_id",
                stored["key_id_ciphertext"],
                name=rules.key_id_name(environment),
                fix=fix,
            ),
            self._state.open(
                environment,
                "key_secret",
                stored["secret_key_ciphertext"],
                name=f"RAZORPAY_{environment.upper()}_KEY_SECRET",
                fix=fix,
            ),
        )

    def _webhook_secret(self, environment: Environment, ciphertext: str, status: int) -> str:
        return self._state.open(
            environment,
            "webhook_secret",
            ciphertext,
            name=f"RAZORPAY_{environment.upper()}_WEBHOOK_SECRET",
            fix=f"Make a new one with POST /api/payments/razorpay/{environment}/webhook/rotate-secret, and "
            "enter it in Razorpay's dashboard.",
            status=status,
        )

    async def api(self, environment: Environment) -> RazorpayApi:
        """Razorpay, with the environment's keys (400 PAYMENT_CONFIG_NOT_FOUND while none are set)."""
        return self._api(*await self._keys(environment))

    async def config(self, actor: Actor) -> dict[str, Any]:
        """`{keys: [{environment, keyType, value}]}` for each environment's api_key, api_secret and
        webhook_secret: the key id masked, a secret `****` (null: not set)."""
        require_person(actor, _AGENT_REFUSAL, _ASK_A_PERSON)
        stored = await self._state.stored_keys()
        keys = []
        for env in ENVIRONMENTS:
            row = stored.get(env)
            keys += [
                {"environment": env, "keyType": "api_key", "value": row["secret_key_mask"] if row else None},
                {"environment": env, "keyType": "api_secret", "value": "****" if row else None},
                {
                    "environment": env,
                    "keyType": "webhook_secret",
                    "value": "****" if row and row["has_webhook"] else None,
                },
            ]
        return {"keys": keys}

    async def set_config(
        self, actor: Actor, environment: Environment, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Check the keys with Razorpay (a one-order listing), store them encrypted with a webhook secret
        (the one given, else the one kept, else a new one), then mirror the catalog. Keys of another
        Razorpay account clear what was mirrored from the previous one."""
        details: dict[str, Any] = {"environment": environment}
        async with audit.refusals(self._database, actor, "SET_RAZORPAY_CONFIG", MODULE, details):
            require_person(actor, _AGENT_REFUSAL, _ASK_A_PERSON)
            given = rules.config(environment, body)
            mask = rules.mask_key(given.key_id)
            details["key"] = mask
            api = self._api(given.key_id, given.key_secret)
            await api.request("GET", "/v1/orders", query={"count": 1, "skip": 0})
            details["webhookSecret"] = "given" if given.webhook_secret else "kept or made"
            webhook_secret = given.webhook_secret or secrets.token_hex(32)
            async with self._database.as_owner() as cur:
                account_changed = await self._state.take_account(cur, environment, given.key_id)
                await self._state.store_keys(
                    cur,
                    environment,
                    key_id=given.key_id,
                    secret_key=given.key_secret,
                    mask=mask,
                    webhook_secret=webhook_secret,
                    replace_webhook_secret=given.webhook_secret is not None,
                )
                await cur.execute(
                    "insert into payments.provider_connections (provider, environment, status, "
                    "provider_account_id, account_name, account_livemode) "
                    "values ('razorpay', %s, 'connected', %s, null, %s) "
                    "on conflict (provider, environment) do update set status = 'connected', "
                    "provider_account_id = excluded.provider_account_id, account_name = null, "
                    "account_livemode = excluded.account_livemode, "
                    "webhook_endpoint_id = case when %s then null else "
                    "payments.provider_connections.webhook_endpoint_id end, "
                    "webhook_endpoint_url = case when %s then null else "
                    "payments.provider_connections.webhook_endpoint_url end, "
                    "webhook_configured_at = case when %s then null else "
                    "payments.provider_connections.webhook_configured_at end, "
                    "last_sync_error = null, updated_at = now()",
                    (environment, given.key_id, environment == "live", *([account_changed] * 3)),
                )
                await audit.record(cur, actor, "SET_RAZORPAY_CONFIG", MODULE, details)
        # The keys are set; a catalog that cannot be read now is recorded on the connection, not an error
        # here.
        with contextlib.suppress(ApiError):
            await self._sync(api, environment)
        return await self.config(actor)

    async def remove_config(self, actor: Actor, environment: Environment) -> dict[str, Any]:
        details: dict[str, Any] = {"environment": environment}
        async with audit.refusals(self._database, actor, "REMOVE_RAZORPAY_CONFIG", MODULE, details):
            require_person(actor, _AGENT_REFUSAL, _ASK_A_PERSON)
            async with self._database.as_owner() as cur:
                reason = f"Razorpay {environment} keys are not configured"
                removed = await self._state.remove_keys(cur, environment, reason)
                if removed is None:
                    raise ApiError(
                        404,
                        "PAYMENT_CONFIG_NOT_FOUND",
                        "No Razorpay keys configured for this environment",
                        "GET /api/payments/razorpay/config shows which environments have keys.",
                    )
                details["key"] = removed
                await audit.record(cur, actor, "REMOVE_RAZORPAY_CONFIG", MODULE, details)
        return await self.config(actor)

    # -- status, sync, webhook setup -------------------------------------------------------------------------

    async def status(self, actor: Actor) -> dict[str, Any]:
        require_admin_actor(actor)
        return {"razorpayConnections": await self._state.connections()}

    async def sync(self, actor: Actor, environment: Environment | None) -> dict[str, Any]:
        """Mirror items, plans, customers' subjects, subscriptions and payments of one environment (or of
        both: `None`) from Razorpay; an environment that cannot be read is a `failed` result, not an error
        (InsForge's `syncAll`)."""
        details: dict[str, Any] = {"environment": environment or "all"}
        async with audit.refusals(self._database, actor, "SYNC_RAZORPAY_PAYMENTS", MODULE, details):
            require_admin_actor(actor)
            results = []
            for env in (environment,) if environment else ENVIRONMENTS:
                counts, error = dict(_EMPTY_COUNTS), None
                try:
                    counts, error = await self._sync(await self.api(env), env)
                except ApiError as exc:
                    error = exc.message
                    if exc.code == "PAYMENT_CONFIG_NOT_FOUND":
                        await self._record_failure(env, "unconfigured", error)
                results.append(
                    {
                        "environment": env,
                        "status": "failed" if error else "succeeded",
                        "connection": await self._state.connection(env),
                        "syncCounts": counts,
                        "error": error,
                    }
                )
            await audit.record(self._database, actor, "SYNC_RAZORPAY_PAYMENTS", MODULE, details)
        return {"results": results}

    async def _record_failure(self, environment: Environment, status: str, message: str) -> None:
        async with self._database.as_owner() as cur:
            await cur.execute(
                "insert into payments.provider_connections (provider, environment, status, last_sync_status, "
                "last_sync_error) values ('razorpay', %s, %s, 'failed', %s) "
                "on conflict (provider, environment) "
                "do update set status = case when %s = 'unconfigured' then 'unconfigured' else "
                "payments.provider_connections.status end, last_sync_status = 'failed', "
                "last_sync_error = excluded.last_sync_error, updated_at = now()",
                (environment, status, message, status),
            )

    async def _sync(self, api: RazorpayApi, environment: Environment) -> tuple[dict[str, int], str | None]:
        """Mirror the catalog (items, plans) as Razorpay has it now, in one transaction: a failure there is
        recorded on the connection and raised. Then InsForge's later stages, each on its own (customers'
        billing subjects, subscriptions, payments into the history): a stage that fails is named in the
        error answered and recorded (`stage: reason; ...`) while the others still count."""
        try:
            items = await api.list_all("/v1/items")
            plans = await api.list_all("/v1/plans")
        except ApiError as exc:
            await self._record_failure(environment, "error", exc.message)
            raise
        counts = {**_EMPTY_COUNTS, "items": len(items), "plans": len(plans)}
        async with self._mirroring() as cur:
            for entity in items:
                await razorpay_mirror.upsert_item(cur, environment, entity)
            for entity in plans:
                await razorpay_mirror.upsert_plan(cur, environment, entity)
            await delete_unlisted(cur, "razorpay_plans", "plan_id", environment, plans)
            await delete_unlisted(cur, "razorpay_items", "item_id", environment, items)
        failures = []
        for stage in ("customers", "subscriptions", "payments"):
            try:
                counts[stage] = await self._sync_stage(api, environment, stage)
            except ApiError as exc:
                failures.append(f"{stage}: {exc.message}")
        error = "; ".join(failures) or None
        async with self._database.as_owner() as cur:
            await cur.execute(
                "update payments.provider_connections set status = 'connected', last_synced_at = now(), "
                "last_sync_status = %s, last_sync_error = %s, last_sync_counts = %s, "
                "updated_at = now() where provider = 'razorpay' and environment = %s",
                ("failed" if error else "succeeded", error, Jsonb(counts), environment),
            )
        return counts, error

    async def _sync_stage(self, api: RazorpayApi, environment: Environment, stage: str) -> int:
        """One stage's entities, upserted in a transaction of its own; how many Razorpay listed."""
        entities = await api.list_all(f"/v1/{stage}")
        async with self._mirroring() as cur:
            for entity in entities:
                if stage == "subscriptions":
                    await razorpay_mirror.upsert_subscription(cur, environment, entity)
                elif stage == "payments":
                    await razorpay_mirror.upsert_payment(
                        cur,
                        environment,
                        entity,
                        subscription_id=None,
                        invoice_id=text(entity.get("invoice_id")),
                        subject=None,
                    )
                else:
                    await customer_mirror.upsert_razorpay_customer(cur, environment, entity)
                    subject = razorpay_mirror.subject_of(razorpay_mirror.notes_of(entity.get("notes")))
                    if subject is not None:
                        await customer_mappings.map_customer(
                            cur, "razorpay", environment, subject, str(entity["id"])
                        )
        return len(entities)

    async def webhook_setup(self, actor: Actor, environment: Environment, *, rotate: bool) -> dict[str, Any]:
        """What to enter in Razorpay's dashboard (Razorpay has no API for webhooks): the URL and the secret,
        kept (or, `rotate`, made anew: the old one stops verifying at once)."""
        action = "ROTATE_RAZORPAY_WEBHOOK_SECRET" if rotate else "GET_RAZORPAY_WEBHOOK_SETUP"
        url = webhook_url(self._settings, environment)
        details: dict[str, Any] = {"environment": environment, "url": url}
        async with audit.refusals(self._database, actor, action, MODULE, details):
            require_person(actor, _AGENT_REFUSAL, _ASK_A_PERSON)
            stored = await self._state.secrets(environment)
            if stored is None:
                raise not_configured(environment)
            if rotate or stored["webhook_secret_ciphertext"] is None:
                secret = secrets.token_hex(32)
                ciphertext = self._state.seal(environment, "webhook_secret", secret)
            else:
                ciphertext = stored["webhook_secret_ciphertext"]
                secret = self._webhook_secret(environment, ciphertext, 400)
            async with self._database.as_owner() as cur:
                await self._state.store_webhook_secret(cur, environment, ciphertext)
                await self._state.set_webhook_endpoint(cur, environment, "manual", url)
                await audit.record(cur, actor, action, MODULE, details)
        return {
            "connection": await self._state.connection(environment),
            "webhookUrl": url,
            "webhookSecret": secret,
        }

    # -- catalog ---------------------------------------------------------------------------------------------

    async def catalog(self, actor: Actor, environment: Environment) -> dict[str, Any]:
        require_admin_actor(actor)
        items = await self._state.rows(
            "select * from payments.razorpay_items where environment = %s order by name, item_id",
            (environment,),
        )
        plans = await self._state.rows(
            "select * from payments.razorpay_plans where environment = %s order by created_at, plan_id",
            (environment,),
        )
        return {
            "items": [razorpay_shapes.item(row) for row in items],
            "plans": [razorpay_shapes.plan(row) for row in plans],
        }

    async def _catalog_change(
        self,
        actor: Actor,
        action: str,
        environment: Environment,
        details: dict[str, Any],
        check: Callable[[], dict[str, Any]],
        path: Callable[[], tuple[str, str]],
    ) -> dict[str, Any]:
        """One write to Razorpay's catalog, checked, mirrored and audited: `{item}` or `{plan}`."""
        async with audit.refusals(self._database, actor, action, MODULE, details):
            require_admin_actor(actor)
            params = check()
            method, where = path()
            api = await self.api(environment)
            answer = await api.request(method, where, params)
            if not isinstance(answer.get("id"), str):
                raise ApiError(
                    502, "UPSTREAM_FAILURE", "Razorpay answered without an id", "Try again in a moment."
                )
            details["id"] = answer["id"]
            async with self._mirroring() as cur:
                if where.startswith("/v1/plans"):
                    shaped = {"plan": await razorpay_mirror.upsert_plan(cur, environment, answer)}
                else:
                    shaped = {"item": await razorpay_mirror.upsert_item(cur, environment, answer)}
                await audit.record(cur, actor, action, MODULE, details)
        return shaped

    async def create_item(
        self, actor: Actor, environment: Environment, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        details: dict[str, Any] = {"environment": environment, "name": body.get("name")}
        return await self._catalog_change(
            actor,
            "CREATE_RAZORPAY_ITEM",
            environment,
            details,
            lambda: rules.item(body, creating=True),
            lambda: ("POST", "/v1/items"),
        )

    async def update_item(
        self, actor: Actor, environment: Environment, item_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        details: dict[str, Any] = {"environment": environment, "itemId": item_id[:255]}
        return await self._catalog_change(
            actor,
            "UPDATE_RAZORPAY_ITEM",
            environment,
            details,
            lambda: rules.item(body, creating=False),
            lambda: ("PATCH", f"/v1/items/{rules.path_id(item_id, 'item')}"),
        )

    async def create_plan(
        self, actor: Actor, environment: Environment, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        details: dict[str, Any] = {"environment": environment, "period": body.get("period")}
        return await self._catalog_change(
            actor,
            "CREATE_RAZORPAY_PLAN",
            environment,
            details,
            lambda: rules.plan(body),
            lambda: ("POST", "/v1/plans"),
        )

    async def subscriptions(
        self, actor: Actor, environment: Environment, subject: tuple[str, str] | None, limit: int
    ) -> dict[str, Any]:
        require_admin_actor(actor)
        pair = subject or (None, None)
        rows = await self._state.rows(
            "select * from payments.razorpay_subscriptions where environment = %s "
            "and (%s::text is null or (subject_type = %s and subject_id = %s)) "
            "order by updated_at desc, subscription_id limit %s",
            (environment, pair[0], pair[0], pair[1], limit),
        )
        return {"subscriptions": [razorpay_shapes.subscription(row) for row in rows]}

    # -- a user's orders and subscriptions -------------------------------------------------------------------

    async def create_order(
        self, actor: Actor, environment: Environment, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Record the order as the caller (RLS decides the billing subject), create it in Razorpay with the
        record's id in its notes, and answer what Razorpay Checkout needs in the browser."""
        request = rules.order(body)
        key_id, key_secret = await self._keys(environment)
        await self._limit_sessions(actor)
        record_id = str(uuid.uuid4())
        receipt = request.receipt or record_id.replace("-", "")[:40]
        notes = razorpay_mirror.stamped(request.notes, request.subject)
        subject = request.subject or (None, None)
        user_id = actor.principal.user_id if actor.principal.db_role == "authenticated" else None
        try:
            async with self._database.transaction_as(actor.principal) as conn:
                await conn.cursor().execute(
                    "insert into payments.razorpay_orders (id, environment, subject_type, subject_id, "
                    "customer_name, customer_email, customer_contact, receipt, amount, currency, "
                    "description, callback_url, notes, created_by) "
                    "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        record_id,
                        environment,
                        subject[0],
                        subject[1],
                        request.customer.name,
                        request.customer.email,
                        request.customer.contact,
                        receipt,
                        request.amount,
                        request.currency.lower(),
                        request.description,
                        request.callback_url,
                        Jsonb(notes),
                        user_id,
                    ),
                )
        except psycopg.errors.InsufficientPrivilege:
            raise ApiError(
                403,
                "AUTH_UNAUTHORIZED",
                "Razorpay order creation is not allowed by payments.razorpay_orders RLS policies",
                "Create the order with no subject, or with subject {type: 'user', id: <your user id>}; other "
                "subjects need a policy of the project's (docs/payments.md).",
            ) from None
        notes = {**notes, "insforge_order_id": record_id}
        params = {"amount": request.amount, "currency": request.currency, "receipt": receipt, "notes": notes}
        try:
            created = await self._api(key_id, key_secret).request("POST", "/v1/orders", params)
            if not isinstance(created.get("id"), str):
                raise ApiError(
                    502, "UPSTREAM_FAILURE", "Razorpay order was not created", "Try again in a moment."
                )
        except ApiError as exc:
            async with self._database.as_owner() as cur:
                await cur.execute(
                    "update payments.razorpay_orders set status = 'failed', last_error = %s, "
                    "updated_at = now() where id = %s",
                    (exc.message[:2000], record_id),
                )
            raise
        status = created.get("status")
        async with self._mirroring() as cur:
            await cur.execute(
                "update payments.razorpay_orders set status = %s, order_id = %s, "
                "receipt = coalesce(%s, receipt), "
                "amount = coalesce(%s, amount), amount_paid = %s, amount_due = %s, "
                "currency = coalesce(%s, currency), attempts = %s, notes = %s, raw = %s, last_error = null, "
                f"updated_at = now() where id = %s returning {razorpay_shapes.ORDER_COLUMNS}",
                (
                    status if status in ("paid", "attempted") else "created",
                    created["id"],
                    text(created.get("receipt")),
                    integer(created.get("amount")),
                    integer(created.get("amount_paid")),
                    integer(created.get("amount_due")),
                    (text(created.get("currency")) or "").lower() or None,
                    integer(created.get("attempts")),
                    Jsonb(notes),
                    Jsonb(created),
                    record_id,
                ),
            )
            row = await cur.fetchone()
        assert row is not None
        order = razorpay_shapes.order(row)
        options: dict[str, Any] = {
            "key": key_id,
            "amount": order["amount"],
            "currency": order["currency"].upper(),
            "order_id": order["orderId"],
        }
        return {
            "order": order,
            "checkoutOptions": _checkout_options(
                options, request.description, request.callback_url, request.customer
            ),
        }

    async def verify_order(
        self, actor: Actor, environment: Environment, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Razorpay Checkout's `razorpay_signature` for an order, checked with the key secret; the order
        is then `attempted` (a webhook makes it `paid`) and remembers the payment."""
        del actor  # (any credential: the signature is the proof)
        row = await self._verified(
            environment,
            body,
            "order",
            "update payments.razorpay_orders set status = case when status = 'paid' then status else "
            "'attempted' end, verified_payment_id = %s, verified_at = now(), last_error = null, "
            "updated_at = now() where environment = %s and order_id = %s "
            f"returning {razorpay_shapes.ORDER_COLUMNS}",
        )
        return {"verified": True, "order": razorpay_shapes.order(row)}

    async def _verified(
        self,
        environment: Environment,
        body: Mapping[str, Any],
        kind: Literal["order", "subscription"],
        update: str,
    ) -> Any:
        """Check what Razorpay Checkout handed the browser for an order or a subscription (its signature,
        with the key secret), then record the payment with `update` (parameters: the payment id, the
        environment, the order's or subscription's id); the row it returns (404 when there is none)."""
        given = rules.verification(body, f"{kind}Id")
        _, key_secret = await self._keys(environment)
        matches = order_signature_matches if kind == "order" else subscription_signature_matches
        if not matches(key_secret, given.object_id, given.payment_id, given.signature):
            raise ApiError(
                400,
                "INVALID_INPUT",
                f"Invalid Razorpay {'payment' if kind == 'order' else kind} signature",
                f"Send razorpay_{kind}_id, razorpay_payment_id and razorpay_signature exactly as Razorpay "
                "Checkout's handler received them.",
            )
        async with self._database.as_owner() as cur:
            await cur.execute(update, (given.payment_id, environment, given.object_id))
            row = await cur.fetchone()
        if row is None:
            raise ApiError(
                404,
                "PAYMENT_NOT_FOUND",
                f"Razorpay {environment} {kind} not found: {given.object_id[:255]}",
                f"Use the {kind}Id that POST /api/payments/razorpay/{environment}/{kind}s answered.",
            )
        return row

    def _require_user(self, actor: Actor, what: str) -> None:
        if actor.principal.db_role not in ("authenticated", "project_admin"):
            raise ApiError(
                401,
                "AUTH_INVALID_CREDENTIALS",
                f"Razorpay subscription {what} requires a user token",
                _NO_USER,
            )

    async def _ask_policies(self, actor: Actor, statement: str, params: tuple[Any, ...], what: str) -> Any:
        """Run `statement` as the caller and roll it back: whether RLS lets them (its one row, or None)."""
        found: Any = None
        try:
            async with self._database.transaction_as(actor.principal) as conn:
                cur = await conn.execute(statement, params)
                found = await cur.fetchone() if cur.description is not None else True
                raise _Probe
        except _Probe:
            return found
        except psycopg.errors.InsufficientPrivilege:
            raise ApiError(
                403,
                "AUTH_UNAUTHORIZED",
                f"Razorpay subscription {what} is not allowed by payments.razorpay_subscriptions RLS "
                "policies",
                "A user manages subscriptions of subject {type: 'user', id: <their user id>}; other subjects "
                "need a policy of the project's (docs/payments.md).",
            ) from None

    async def create_subscription(
        self, actor: Actor, environment: Environment, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Create it in Razorpay for a billing subject the caller's policies allow, mirror it, and answer what
        Razorpay Checkout needs to authorize it."""
        self._require_user(actor, "creation")
        request = rules.subscription(body)
        key_id, key_secret = await self._keys(environment)
        await self._ask_policies(
            actor,
            "insert into payments.razorpay_subscriptions (environment, subscription_id, plan_id, "
            "subject_type, subject_id, status) values (%s, %s, %s, %s, %s, 'created')",
            (environment, f"sub_rls_probe_{uuid.uuid4().hex}", request.params["plan_id"], *request.subject),
            "creation",
        )
        await self._limit_sessions(actor)
        params = {
            **request.params,
            "notes": razorpay_mirror.stamped(request.params["notes"], request.subject),
        }
        created = await self._api(key_id, key_secret).request("POST", "/v1/subscriptions", params)
        subscription = await self._mirror_subscription(environment, created, request.subject)
        options = {"key": key_id, "subscription_id": subscription["subscriptionId"]}
        return {
            "subscription": subscription,
            "checkoutOptions": _checkout_options(
                options, request.description, request.callback_url, request.customer
            ),
        }

    async def _mirror_subscription(
        self, environment: Environment, entity: dict[str, Any], subject: tuple[str, str] | None
    ) -> dict[str, Any]:
        if not isinstance(entity.get("id"), str):
            raise ApiError(
                502,
                "UPSTREAM_FAILURE",
                "Razorpay answered without a subscription id",
                "Try again in a moment.",
            )
        async with self._mirroring() as cur:
            return await razorpay_mirror.upsert_subscription(cur, environment, entity, subject)

    async def verify_subscription(
        self, actor: Actor, environment: Environment, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Razorpay Checkout's signature of a subscription's authorization payment, checked with the key
        secret; a `created` subscription is then `authenticated`."""
        del actor  # (any credential: the signature is the proof)
        row = await self._verified(
            environment,
            body,
            "subscription",
            "update payments.razorpay_subscriptions set authorization_payment_id = %s, "
            "authorization_verified_at = now(), status = case when status = 'created' then "
            "'authenticated' else status end, updated_at = now() where environment = %s and "
            "subscription_id = %s returning *",
        )
        return {"verified": True, "subscription": razorpay_shapes.subscription(row)}

    async def manage_subscription(
        self,
        actor: Actor,
        environment: Environment,
        subscription_id: str,
        action: str,
        body: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Cancel, pause or resume a subscription the caller's policies let them manage, in Razorpay, and
        mirror what Razorpay answers."""
        self._require_user(actor, "management")
        if action == "cancel":
            at_cycle_end = rules.cancel(body)
            params: dict[str, Any] = {"cancel_at_cycle_end": 1 if at_cycle_end else 0}
        else:
            rules.empty(body)
            params = {"pause_at": "now"} if action == "pause" else {"resume_at": "now"}
        subscription_id = rules.path_id(subscription_id, "subscription")
        key_id, key_secret = await self._keys(environment)
        found = await self._ask_policies(
            actor,
            "update payments.razorpay_subscriptions set updated_at = updated_at where environment = %s and "
            "subscription_id = %s returning subject_type, subject_id",
            (environment, subscription_id),
            "management",
        )
        if found is None:
            raise ApiError(
                404,
                "PAYMENT_NOT_FOUND",
                f"Razorpay {environment} subscription not found or not manageable: {subscription_id}",
                f"List them with GET /api/payments/razorpay/{environment}/subscriptions (the admin), or "
                "sync.",
            )
        subject = (found[0], found[1]) if found[0] and found[1] else None
        path = f"/v1/subscriptions/{subscription_id}/{action}"
        answer = await self._api(key_id, key_secret).request("POST", path, params)
        return {"subscription": await self._mirror_subscription(environment, answer, subject)}

    # -- Razorpay's webhook ----------------------------------------------------------------------------------

    async def receive_webhook(
        self, environment: Environment, payload: bytes, signature: str | None, header_event_id: str | None
    ) -> dict[str, Any]:
        """Verify the signature before anything else; record the event once (a retry of one already
        processed or ignored is answered without applying it again); apply it in the same transaction."""
        if not signature:
            raise ApiError(
                401,
                "AUTH_UNAUTHORIZED",
                "Missing X-Razorpay-Signature header",
                "Only Razorpay calls this endpoint; it signs every request.",
            )
        ciphertext = await self._state.webhook_ciphertext(
            environment,
            f"Razorpay {environment} webhook secret is not configured",
            f"GET /api/payments/razorpay/{environment}/webhook gives the URL and secret to enter in "
            "Razorpay's dashboard.",
        )
        secret = self._webhook_secret(environment, ciphertext, 503)
        if not webhook_signature_matches(payload, signature, secret):
            raise ApiError(
                400,
                "INVALID_INPUT",
                "Invalid Razorpay webhook signature. Confirm the Razorpay Dashboard webhook secret matches "
                f"the {environment} InsForge webhook setup and the webhook URL points to "
                f"/api/webhooks/razorpay/{environment}.",
                f"GET /api/payments/razorpay/{environment}/webhook shows the secret to enter in Razorpay.",
            )
        event = _event(event_outcome.storable(payload))
        event_id = razorpay_events.event_id(event, header_event_id)
        received = ReceivedEvent(
            event_id=event_id,
            event_type=str(event["event"])[:255],
            livemode=environment == "live",
            account_id=text(event.get("account_id")),
            object_type=None,
            object_id=None,
            payload=event,
        )
        async with self._database.as_owner() as cur:
            handled = await record_and_apply(
                cur, "razorpay", environment, received, lambda: razorpay_events.apply(cur, environment, event)
            )
        return {"received": True, "handled": handled}


def _checkout_options(
    options: dict[str, Any], description: str | None, callback_url: str | None, customer: rules.Customer
) -> dict[str, Any]:
    """Razorpay Checkout's options (`key`, the order or subscription, `prefill`), as InsForge builds them."""
    if description:
        options["description"] = description
    if callback_url:
        options["callback_url"] = callback_url
    prefill = {"name": customer.name, "email": customer.email, "contact": customer.contact}
    options["prefill"] = {k: v for k, v in prefill.items() if v}
    return options


def _event(payload: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        event = None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise ApiError(
            400,
            "INVALID_INPUT",
            "Invalid Razorpay webhook payload",
            "Only Razorpay calls this endpoint.",
        )
    return event
