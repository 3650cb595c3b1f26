"""The service behind `/api/payments/stripe/...` and `/api/webhooks/stripe/:environment`: Stripe payments as
InsForge offers them (`backend/src/services/payments/stripe/`), for the test and live environments.

Paths, shapes, codes and messages are InsForge's. Where Kilnbase differs, on purpose:

- The secret keys are stored encrypted with the project's SecretBox in a table no request role reads, and
  never answered whole: `GET .../config` answers each key masked (`sk_test_****abcd`), where InsForge answers
  it in full. Setting, removing or reading them is a person's: agent keys are refused whatever their scopes
  (a key decides whose Stripe account takes the money), as the model gateway's money controls are.
- `PUT .../config` also takes `webhookSecret`: the signing secret of an endpoint made outside Kilnbase
  (`stripe listen`, or Stripe's dashboard), for a server Stripe cannot reach to be given an endpoint of its
  own. Without it, Kilnbase makes its managed endpoint, as InsForge does.
- Users' checkout and portal sessions are written as the user, under Row Level Security that by default
  lets a user pay only for no billing subject or for their own (`{type: 'user', id: <their id>}`), and the
  anon key only for none: InsForge leaves every subject open until the project adds policies. An agent key
  may start a checkout (`payments:write`) but never open a customer portal, whose link signs in to a
  customer's billing.
- The webhook receiver answers 503 (Stripe retries) while no signing secret is set, where InsForge answers
  500; an event is recorded and applied in one transaction, so a retry of a processed event changes nothing.

Every change an admin makes, and every refused one, is audited (module `PAYMENTS`), a key only as its mask.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import orjson
import psycopg
from psycopg.types.json import Jsonb

from kilnbase import audit
from kilnbase.config import Settings
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError, refuse_agent_keys, require_admin_actor, require_person
from kilnbase.http.rate_limit import RateLimiter
from kilnbase.identity.actor import Actor
from kilnbase.keys.secret_box import SecretBox
from kilnbase.payments import (
    customer_mappings,
    customer_mirror,
    definitions,
    event_outcome,
    events,
    mirror,
    shapes,
    stripe_api,
)
from kilnbase.payments.customers import Customers
from kilnbase.payments.definitions import ENVIRONMENTS, Environment
from kilnbase.payments.mirror_upsert import delete_unlisted
from kilnbase.payments.provider_state import Profile, ProviderState
from kilnbase.payments.razorpay_service import Razorpay
from kilnbase.payments.stripe_api import SignatureError, StripeApi, verify_signature
from kilnbase.payments.webhook_log import ReceivedEvent, record_and_apply

MODULE = "PAYMENTS"
log = logging.getLogger("kilnbase.payments")
#: How Kilnbase's own webhook endpoints are marked in Stripe, so a new key or a new endpoint replaces them.
MANAGED_METADATA = {"managed_by": "kilnbase", "kilnbase_webhook": "stripe_payments"}

_AGENT_REFUSAL = (
    "Agent keys may not set, read or remove the Stripe keys: a key decides whose Stripe account takes the "
    "payments."
)
_ASK_A_PERSON = "Ask the project admin to do it (with the project's API key or the dashboard)."
#: What a customers listing expands, so the list shows each customer's default card.
_CUSTOMER_EXPANSIONS = ["data.invoice_settings.default_payment_method", "data.default_source"]
STRIPE = Profile(
    name="stripe",
    account=("accountEmail", "account_email"),
    api_key_context="secret_key",
    own_tables=(
        "stripe_subscription_items",
        "stripe_subscriptions",
        "stripe_checkout_sessions",
        "stripe_customer_portal_sessions",
        "stripe_prices",
        "stripe_products",
    ),
)


def not_configured(environment: Environment) -> ApiError:
    return ApiError(
        400,
        "PAYMENT_CONFIG_INVALID",
        f"{definitions.secret_key_name(environment)} is not configured",
        f"The project admin sets it with PUT /api/payments/stripe/{environment}/config {{secretKey}}.",
    )


def webhook_url(settings: Settings, environment: Environment) -> str:
    return f"{settings.base_url}/api/webhooks/stripe/{environment}"


class Payments:
    def __init__(self, settings: Settings, database: Database, box: SecretBox, limiter: RateLimiter) -> None:
        self._settings = settings
        self._database = database
        self._box = box
        self._limiter = limiter
        self._state = ProviderState(database, box, STRIPE)
        #: Razorpay, on the same tables, keys and limits (`razorpay_service.py`).
        self.razorpay = Razorpay(settings, database, box, self._limit_sessions)
        #: The customers lists of both providers (`customers.py`).
        self.customers = Customers(database)

    async def _limit_sessions(self, actor: Actor) -> None:
        """At most `payments_sessions_per_minute` sessions a minute per user (per address for the anon key
        and the API key). A user by credential: an external provider's subject is the provider's to choose,
        so it could be another provider's user's, or one of Kilnbase's own user ids."""
        principal = actor.principal
        who = principal.credential_id if principal.user_id else (actor.ip or "unknown")
        limit = self._settings.payments_sessions_per_minute
        retry_after = await self._limiter.hit(f"payments-sessions:{who}", limit, 60)
        if retry_after is not None:
            seconds = max(1, int(retry_after + 0.999))
            raise ApiError(
                429,
                "RATE_LIMITED",
                f"Too many payment sessions: at most {limit} a minute.",
                f"Wait {seconds} seconds and try again (KILNBASE_PAYMENTS_SESSIONS_PER_MINUTE sets the "
                "limit).",
                headers={"Retry-After": str(seconds)},
            )

    # -- keys ------------------------------------------------------------------------------------------------

    async def stripe(self, environment: Environment) -> StripeApi:
        """Stripe, with the environment's key (400 PAYMENT_CONFIG_INVALID while none is set)."""
        stored = await self._state.secrets(environment)
        if stored is None:
            raise not_configured(environment)
        return self._api(self._stored_key(environment, stored["secret_key_ciphertext"]))

    def _stored_key(self, environment: Environment, ciphertext: str) -> str:
        return self._state.open(
            environment,
            "secret_key",
            ciphertext,
            name=definitions.secret_key_name(environment),
            fix=f"Set the key again with PUT /api/payments/stripe/{environment}/config {{secretKey}}.",
        )

    def _api(self, key: str) -> StripeApi:
        return StripeApi(self._settings.stripe_api_base, key, self._settings.stripe_timeout_seconds)

    async def _masks(self) -> dict[str, str]:
        return {env: row["secret_key_mask"] for env, row in (await self._state.stored_keys()).items()}

    async def config(self, actor: Actor) -> dict[str, Any]:
        """`{keys: [{environment, value}]}`, each value masked (null: no key)."""
        require_person(actor, _AGENT_REFUSAL, _ASK_A_PERSON)
        masks = await self._masks()
        return {"keys": [{"environment": env, "value": masks.get(env)} for env in ENVIRONMENTS]}

    async def set_config(
        self, actor: Actor, environment: Environment, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Check the key with Stripe (its account), give it a webhook endpoint (or take the signing secret
        given), store both encrypted, then mirror the catalog. A key of another Stripe account clears what
        was mirrored from the previous one."""
        details: dict[str, Any] = {"environment": environment}
        async with audit.refusals(self._database, actor, "SET_STRIPE_CONFIG", MODULE, details):
            require_person(actor, _AGENT_REFUSAL, _ASK_A_PERSON)
            given = definitions.config(environment, body)
            mask = definitions.mask_key(given.secret_key)
            details["key"] = mask
            api = self._api(given.secret_key)
            account = await api.request("GET", "/v1/account")
            endpoint: dict[str, Any] | None = None
            webhook_secret = given.webhook_secret
            if webhook_secret is None:
                endpoint = await self._managed_endpoint(api, environment, strict=False)
                webhook_secret = endpoint["secret"] if endpoint else None
            details["accountId"] = account.get("id")
            details["webhook"] = "given" if given.webhook_secret else ("created" if endpoint else "none")
            async with self._database.as_owner() as cur:
                await self._state.take_account(cur, environment, mirror.text(account.get("id")))
                await self._state.store_keys(
                    cur,
                    environment,
                    secret_key=given.secret_key,
                    mask=mask,
                    webhook_secret=webhook_secret,
                    replace_webhook_secret=webhook_secret is not None,
                )
                await cur.execute(
                    "insert into payments.provider_connections (environment, status, provider_account_id, "
                    "account_email, account_livemode, webhook_endpoint_id, webhook_endpoint_url, "
                    "webhook_configured_at) values (%s, 'connected', %s, %s, %s, %s, %s, "
                    "case when %s::text is null then null else now() end) "
                    "on conflict (provider, environment) do update set status = 'connected', "
                    "provider_account_id = excluded.provider_account_id, account_email = "
                    "excluded.account_email, "
                    "account_livemode = excluded.account_livemode, "
                    "webhook_endpoint_id = coalesce(excluded.webhook_endpoint_id, "
                    "payments.provider_connections.webhook_endpoint_id), "
                    "webhook_endpoint_url = coalesce(excluded.webhook_endpoint_url, "
                    "payments.provider_connections.webhook_endpoint_url), "
                    "webhook_configured_at = coalesce(excluded.webhook_configured_at, "
                    "payments.provider_connections.webhook_configured_at), last_sync_error = null, "
                    "updated_at = now()",
                    (
                        environment,
                        mirror.text(account.get("id")),
                        mirror.text(account.get("email")),
                        environment == "live",
                        endpoint["id"] if endpoint else None,
                        endpoint["url"] if endpoint else None,
                        endpoint["id"] if endpoint else None,
                    ),
                )
                await audit.record(cur, actor, "SET_STRIPE_CONFIG", MODULE, details)
        # The key is set; a catalog that cannot be read now is recorded on the connection, not an error here.
        with contextlib.suppress(ApiError):
            await self._sync(api, environment)
        return await self.config(actor)

    async def remove_config(self, actor: Actor, environment: Environment) -> dict[str, Any]:
        """Remove the key and the signing secret; Kilnbase's endpoint in Stripe goes too, when Stripe can be
        asked (a key Stripe no longer takes still comes off)."""
        details: dict[str, Any] = {"environment": environment}
        async with audit.refusals(self._database, actor, "REMOVE_STRIPE_CONFIG", MODULE, details):
            require_person(actor, _AGENT_REFUSAL, _ASK_A_PERSON)
            stored = await self._state.secrets(environment)
            if stored is None:
                raise ApiError(
                    404,
                    "PAYMENT_CONFIG_NOT_FOUND",
                    "No Stripe key configured",
                    "GET /api/payments/stripe/config shows which environments have a key.",
                )
            details["key"] = stored["secret_key_mask"]
            try:
                api = self._api(self._stored_key(environment, stored["secret_key_ciphertext"]))
                await self._delete_managed_endpoints(api, environment)
            except ApiError:
                details["endpoint"] = "left in Stripe (Stripe refused or could not be reached)"
            async with self._database.as_owner() as cur:
                reason = f"{definitions.secret_key_name(environment)} is not configured"
                await self._state.remove_keys(cur, environment, reason)
                await audit.record(cur, actor, "REMOVE_STRIPE_CONFIG", MODULE, details)
        return await self.config(actor)

    # -- status, sync, webhook endpoint ----------------------------------------------------------------------

    async def status(self, actor: Actor) -> dict[str, Any]:
        require_admin_actor(actor)
        return {"connections": await self._state.connections()}

    async def sync(self, actor: Actor, environment: Environment | None) -> dict[str, Any]:
        """Mirror the catalog of one environment (or each one with a key: `None`) from Stripe."""
        details: dict[str, Any] = {"environment": environment or "all"}
        async with audit.refusals(self._database, actor, "SYNC_PAYMENTS", MODULE, details):
            require_admin_actor(actor)
            results = []
            masks = await self._masks()
            for env in (environment,) if environment else ENVIRONMENTS:
                if environment is not None or env in masks:
                    await self._sync(await self.stripe(env), env)
                results.append(
                    {
                        "environment": env,
                        "connection": await self._state.connection(env),
                        "subscriptions": None,
                    }
                )
            await audit.record(self._database, actor, "SYNC_PAYMENTS", MODULE, details)
        return {"results": results}

    async def _sync(self, api: StripeApi, environment: Environment) -> None:
        """The catalog as Stripe has it now, in one transaction; a failure is recorded on the connection."""
        try:
            products = await api.list_all("/v1/products")
            prices = await api.list_all("/v1/prices", {"active": True}) + await api.list_all(
                "/v1/prices", {"active": False}
            )
        except ApiError as exc:
            async with self._database.as_owner() as cur:
                await cur.execute(
                    "update payments.provider_connections set last_sync_status = 'failed', last_sync_error "
                    "= %s, "
                    "updated_at = now() where provider = 'stripe' and environment = %s",
                    (exc.message, environment),
                )
            raise
        async with self._database.as_owner() as cur:
            for product in products:
                await mirror.upsert_product(cur, environment, product)
            for price in prices:
                await mirror.upsert_price(cur, environment, price)
            await delete_unlisted(cur, "stripe_prices", "price_id", environment, prices)
            await delete_unlisted(cur, "stripe_products", "product_id", environment, products)
            await cur.execute(
                "update payments.provider_connections set last_synced_at = now(), last_sync_status = "
                "'succeeded', "
                "last_sync_error = null, last_sync_counts = %s, updated_at = now() "
                "where provider = 'stripe' and environment = %s",
                (Jsonb({"products": len(products), "prices": len(prices)}), environment),
            )
        await self._sync_customers(api, environment)

    async def _sync_customers(self, api: StripeApi, environment: Environment) -> None:
        """The customers as Stripe has them now, with their default card (for the customers list), in one
        transaction. As in InsForge, a failure here leaves the catalog's sync standing: the customers wait
        for the next sync, and `customer.*` events keep them current meanwhile."""
        try:
            customers = await api.list_all("/v1/customers", {"expand": _CUSTOMER_EXPANSIONS})
            async with self._database.as_owner() as cur:
                for customer in customers:
                    await customer_mirror.upsert_stripe_customer(cur, environment, customer)
                # Past `MAX_PAGES` the listing stops short: a customer not read then is not a deleted one.
                if len(customers) < stripe_api.PAGE * stripe_api.MAX_PAGES:
                    listed = [str(c["id"]) for c in customers if isinstance(c.get("id"), str)]
                    await customer_mirror.mark_missing_stripe_customers(cur, environment, listed)
        except (ApiError, psycopg.errors.DataError) as exc:
            log.warning("Stripe %s customers were not synced: %s", environment, exc)

    async def configure_webhook(self, actor: Actor, environment: Environment) -> dict[str, Any]:
        """(Re)make Kilnbase's endpoint in Stripe for this environment and keep its signing secret."""
        details: dict[str, Any] = {
            "environment": environment,
            "url": webhook_url(self._settings, environment),
        }
        async with audit.refusals(self._database, actor, "CONFIGURE_STRIPE_WEBHOOK", MODULE, details):
            require_admin_actor(actor)
            api = await self.stripe(environment)
            endpoint = await self._managed_endpoint(api, environment, strict=True)
            assert endpoint is not None
            async with self._database.as_owner() as cur:
                sealed = self._state.seal(environment, "webhook_secret", endpoint["secret"])
                await self._state.store_webhook_secret(cur, environment, sealed)
                await self._state.set_webhook_endpoint(cur, environment, endpoint["id"], endpoint["url"])
                await audit.record(cur, actor, "CONFIGURE_STRIPE_WEBHOOK", MODULE, details)
        return {"connection": await self._state.connection(environment)}

    async def _managed_endpoint(
        self, api: StripeApi, environment: Environment, *, strict: bool
    ) -> dict[str, Any] | None:
        """Replace Kilnbase's endpoint for this environment: `{id, url, secret}`; None when Stripe refuses
        it and not `strict` (a URL Stripe cannot reach, such as loopback)."""
        url = webhook_url(self._settings, environment)
        try:
            await self._delete_managed_endpoints(api, environment)
            created = await api.request(
                "POST",
                "/v1/webhook_endpoints",
                {
                    "url": url,
                    "enabled_events": list(events.EVENTS),
                    "metadata": {**MANAGED_METADATA, "kilnbase_environment": environment},
                },
            )
        except ApiError:
            if strict:
                raise
            return None
        secret = mirror.text(created.get("secret"))
        if secret is None or not isinstance(created.get("id"), str):
            if strict:
                raise ApiError(
                    502,
                    "UPSTREAM_FAILURE",
                    "Stripe did not return a webhook signing secret for the managed endpoint",
                    "Try again; or set the signing secret of an endpoint of your own (PUT .../config).",
                )
            return None
        return {"id": created["id"], "url": url, "secret": secret}

    async def _delete_managed_endpoints(self, api: StripeApi, environment: Environment) -> None:
        for endpoint in await api.list_all("/v1/webhook_endpoints"):
            metadata = mirror.string_map(endpoint.get("metadata"))
            ours = all(metadata.get(k) == v for k, v in MANAGED_METADATA.items())
            if ours and metadata.get("kilnbase_environment") == environment:
                await api.request("DELETE", f"/v1/webhook_endpoints/{endpoint['id']}")

    # -- catalog ---------------------------------------------------------------------------------------------

    async def products(self, actor: Actor, environment: Environment) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        rows = await self._state.rows(
            "select * from payments.stripe_products where environment = %s order by name, product_id",
            (environment,),
        )
        return [shapes.product(row) for row in rows]

    async def prices(
        self, actor: Actor, environment: Environment, product_id: str | None = None
    ) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        rows = await self._state.rows(
            "select * from payments.stripe_prices where environment = %s "
            "and (%s::text is null or product_id = %s) order by product_id, unit_amount nulls last, price_id",
            (environment, product_id, product_id),
        )
        return [shapes.price(row) for row in rows]

    async def product(self, actor: Actor, environment: Environment, product_id: str) -> dict[str, Any]:
        require_admin_actor(actor)
        rows = await self._state.rows(
            "select * from payments.stripe_products where environment = %s and product_id = %s",
            (environment, product_id),
        )
        if not rows:
            raise _product_not_found(environment)
        return {
            "product": shapes.product(rows[0]),
            "prices": await self.prices(actor, environment, product_id),
        }

    async def price(self, actor: Actor, environment: Environment, price_id: str) -> dict[str, Any]:
        require_admin_actor(actor)
        rows = await self._state.rows(
            "select * from payments.stripe_prices where environment = %s and price_id = %s",
            (environment, price_id),
        )
        if not rows:
            raise _price_not_found(environment)
        return {"price": shapes.price(rows[0])}

    async def _catalog_change(
        self,
        actor: Actor,
        action: str,
        environment: Environment,
        details: dict[str, Any],
        call: tuple[str, str, dict[str, Any]],
        kind: str,
    ) -> dict[str, Any]:
        """One write to Stripe's catalog (`call`: method, path, parameters), mirrored and audited."""
        async with audit.refusals(self._database, actor, action, MODULE, details):
            require_admin_actor(actor)
            api = await self.stripe(environment)
            method, path, params = call
            key = params.pop("idempotencyKey", None)
            idempotency = f"kilnbase:{environment}:{kind}:{key}" if key else None
            answer = await api.request(method, path, params, idempotency_key=idempotency)
            async with self._database.as_owner() as cur:
                if kind == "product" and answer.get("deleted") is True:
                    await cur.execute(
                        "delete from payments.stripe_products where environment = %s and product_id = %s",
                        (environment, answer.get("id")),
                    )
                elif kind == "product":
                    await mirror.upsert_product(cur, environment, answer)
                else:
                    await mirror.upsert_price(cur, environment, answer)
                details["id"] = answer.get("id")
                await audit.record(cur, actor, action, MODULE, details)
        return answer

    async def create_product(
        self, actor: Actor, environment: Environment, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        details: dict[str, Any] = {"environment": environment, "name": body.get("name")}
        params = await self._checked(
            actor, "CREATE_STRIPE_PRODUCT", details, lambda: definitions.product(body, creating=True)
        )
        answer = await self._catalog_change(
            actor, "CREATE_STRIPE_PRODUCT", environment, details, ("POST", "/v1/products", params), "product"
        )
        return {"product": await self._mirrored_product(environment, str(answer["id"]))}

    async def update_product(
        self, actor: Actor, environment: Environment, product_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        details: dict[str, Any] = {"environment": environment, "productId": product_id}
        params = await self._checked(
            actor, "UPDATE_STRIPE_PRODUCT", details, lambda: definitions.product(body, creating=False)
        )
        path = f"/v1/products/{_path_id(product_id)}"
        await self._catalog_change(
            actor, "UPDATE_STRIPE_PRODUCT", environment, details, ("POST", path, params), "product"
        )
        return {"product": await self._mirrored_product(environment, product_id)}

    async def delete_product(self, actor: Actor, environment: Environment, product_id: str) -> dict[str, Any]:
        details: dict[str, Any] = {"environment": environment, "productId": product_id}
        path = f"/v1/products/{_path_id(product_id)}"
        answer = await self._catalog_change(
            actor, "DELETE_STRIPE_PRODUCT", environment, details, ("DELETE", path, {}), "product"
        )
        return {"productId": product_id, "deleted": bool(answer.get("deleted"))}

    async def create_price(
        self, actor: Actor, environment: Environment, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        details: dict[str, Any] = {"environment": environment, "productId": body.get("productId")}
        params = await self._checked(
            actor, "CREATE_STRIPE_PRICE", details, lambda: definitions.price(body, creating=True)
        )
        answer = await self._catalog_change(
            actor, "CREATE_STRIPE_PRICE", environment, details, ("POST", "/v1/prices", params), "price"
        )
        return await self.price(actor, environment, str(answer["id"]))

    async def update_price(
        self, actor: Actor, environment: Environment, price_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        details: dict[str, Any] = {"environment": environment, "priceId": price_id}
        params = await self._checked(
            actor, "UPDATE_STRIPE_PRICE", details, lambda: definitions.price(body, creating=False)
        )
        path = f"/v1/prices/{_path_id(price_id)}"
        await self._catalog_change(
            actor, "UPDATE_STRIPE_PRICE", environment, details, ("POST", path, params), "price"
        )
        return await self.price(actor, environment, price_id)

    async def archive_price(self, actor: Actor, environment: Environment, price_id: str) -> dict[str, Any]:
        """Stripe never deletes a price: it is made inactive (`archived`)."""
        details: dict[str, Any] = {"environment": environment, "priceId": price_id}
        path = f"/v1/prices/{_path_id(price_id)}"
        await self._catalog_change(
            actor, "ARCHIVE_STRIPE_PRICE", environment, details, ("POST", path, {"active": False}), "price"
        )
        return {**(await self.price(actor, environment, price_id)), "archived": True}

    async def _checked(
        self, actor: Actor, action: str, details: dict[str, Any], check: Any
    ) -> dict[str, Any]:
        async with audit.refusals(self._database, actor, action, MODULE, details):
            require_admin_actor(actor)
            checked: dict[str, Any] = check()
            return checked

    async def _mirrored_product(self, environment: Environment, product_id: str) -> dict[str, Any]:
        rows = await self._state.rows(
            "select * from payments.stripe_products where environment = %s and product_id = %s",
            (environment, product_id),
        )
        if not rows:
            raise _product_not_found(environment)
        return shapes.product(rows[0])

    # -- history ---------------------------------------------------------------------------------------------

    async def transactions(
        self,
        actor: Actor,
        environment: Environment,
        query: definitions.ListQuery,
        provider: Literal["stripe", "razorpay"] = "stripe",
    ) -> list[dict[str, Any]]:
        """The payment history of one provider (the table is shared), newest first."""
        require_admin_actor(actor)
        subject = query.subject or (None, None)
        rows = await self._state.rows(
            "select * from payments.transactions where provider = %s and environment = %s "
            "and (%s::text is null or (subject_type = %s and subject_id = %s)) "
            "order by coalesce(provider_created_at, created_at) desc, id limit %s",
            (provider, environment, subject[0], subject[0], subject[1], query.limit),
        )
        return [shapes.transaction(row) for row in rows]

    async def subscriptions(
        self, actor: Actor, environment: Environment, query: definitions.ListQuery
    ) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        subject = query.subject or (None, None)
        rows = await self._state.rows(
            "select * from payments.stripe_subscriptions where environment = %s "
            "and (%s::text is null or (subject_type = %s and subject_id = %s)) "
            "order by created_at desc, subscription_id limit %s",
            (environment, subject[0], subject[0], subject[1], query.limit),
        )
        items = await self._state.rows(
            "select * from payments.stripe_subscription_items where environment = %s "
            "and subscription_id = any(%s) order by created_at, subscription_item_id",
            (environment, [row["subscription_id"] for row in rows]),
        )
        return [
            shapes.subscription(row, [i for i in items if i["subscription_id"] == row["subscription_id"]])
            for row in rows
        ]

    # -- a user's sessions -----------------------------------------------------------------------------------

    async def create_checkout(
        self, actor: Actor, environment: Environment, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A Stripe Checkout Session for the caller: recorded as the caller first (RLS decides whether it may
        pay for that subject), then made in Stripe, whose answer (its URL) is recorded and returned. With an
        `idempotencyKey`, the same request again answers the same session."""
        request = definitions.checkout(body)
        api = await self.stripe(environment)
        await self._limit_sessions(actor)
        metadata = {**request.metadata, mirror.CHECKOUT_MODE_KEY: request.mode}
        if request.subject is not None:
            metadata[mirror.SUBJECT_TYPE_KEY], metadata[mirror.SUBJECT_ID_KEY] = request.subject
        request_hash = _request_hash(environment, request, metadata)
        user_id = actor.principal.user_id if actor.principal.db_role == "authenticated" else None
        session_id, existing = await self._record_checkout(
            actor, environment, request, metadata, request_hash, user_id
        )
        if existing is not None:
            return {"checkoutSession": existing}
        async with self._database.as_owner() as cur:
            customer = (
                await customer_mappings.customer_of_subject(cur, "stripe", environment, request.subject)
                if request.subject
                else None
            )
        params: dict[str, Any] = {
            "mode": request.mode,
            "line_items": [
                {"price": item.price_id, "quantity": item.quantity} for item in request.line_items
            ],
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
            "client_reference_id": session_id,
            "metadata": {**metadata, mirror.CHECKOUT_SESSION_KEY: session_id},
        }
        if customer is not None:
            params["customer"] = customer
        elif request.customer_email is not None:
            params["customer_email"] = request.customer_email
        if request.mode == "payment" and request.subject is not None and customer is None:
            params["customer_creation"] = "always"
        params["subscription_data" if request.mode == "subscription" else "payment_intent_data"] = {
            "metadata": metadata
        }
        idempotency = f"kilnbase:{environment}:checkout_session:{request.idempotency_key or session_id}"
        try:
            session = await api.request("POST", "/v1/checkout/sessions", params, idempotency_key=idempotency)
        except ApiError as exc:
            await self._fail("stripe_checkout_sessions", session_id, exc.message)
            raise
        status = {"open": "open", "complete": "completed", "expired": "expired"}.get(
            str(session.get("status")), "open"
        )
        payment_status = session.get("payment_status")
        async with self._database.as_owner() as cur:
            await cur.execute(
                "update payments.stripe_checkout_sessions set status = %s, payment_status = %s, "
                "checkout_session_id = %s, customer_id = %s, payment_intent_id = %s, subscription_id = %s, "
                "url = %s, "
                "raw = %s, last_error = null, updated_at = now() where id = %s "
                f"returning {shapes.CHECKOUT_COLUMNS}",
                (
                    status,
                    payment_status if payment_status in ("paid", "unpaid", "no_payment_required") else None,
                    mirror.text(session.get("id")),
                    mirror.object_id(session.get("customer")),
                    mirror.object_id(session.get("payment_intent")),
                    mirror.object_id(session.get("subscription")),
                    mirror.text(session.get("url")),
                    Jsonb(session),
                    session_id,
                ),
            )
            row = await cur.fetchone()
        assert row is not None
        return {"checkoutSession": shapes.checkout_session(row)}

    async def _record_checkout(
        self,
        actor: Actor,
        environment: Environment,
        request: definitions.CheckoutRequest,
        metadata: dict[str, str],
        request_hash: str,
        user_id: str | None,
    ) -> tuple[str, dict[str, Any] | None]:
        """The session's row, inserted as the caller; for an idempotency key already used, that row (an
        answer when it has its URL) or 409 when the key was used for another request."""
        session_id = str(uuid.uuid4())
        subject = request.subject or (None, None)
        try:
            async with self._database.transaction_as(actor.principal) as conn:
                cur = conn.cursor()
                await cur.execute(
                    "insert into payments.stripe_checkout_sessions (id, environment, mode, subject_type, "
                    "subject_id, "
                    "customer_email, line_items, success_url, cancel_url, idempotency_key, request_hash, "
                    "metadata, "
                    "created_by) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        session_id,
                        environment,
                        request.mode,
                        subject[0],
                        subject[1],
                        request.customer_email,
                        Jsonb([{"priceId": i.price_id, "quantity": i.quantity} for i in request.line_items]),
                        request.success_url,
                        request.cancel_url,
                        request.idempotency_key,
                        request_hash,
                        Jsonb(metadata),
                        user_id,
                    ),
                )
            inserted = True
        except psycopg.errors.UniqueViolation:
            # (Not ON CONFLICT DO NOTHING: Postgres applies SELECT policies to its arbiter, and the anon key
            # may not read checkout sessions.)
            inserted = False
        except psycopg.errors.InsufficientPrivilege:
            raise ApiError(
                403,
                "AUTH_UNAUTHORIZED",
                "Checkout session creation is not allowed by payments.stripe_checkout_sessions RLS policies",
                "Start checkout with no subject, or with subject {type: 'user', id: <your user id>}; other "
                "subjects need a policy of the project's (docs/payments.md).",
            ) from None
        if inserted:
            return session_id, None
        async with self._database.as_owner() as cur:
            await cur.execute(
                f"select {shapes.CHECKOUT_COLUMNS} from payments.stripe_checkout_sessions where "
                "environment = %s "
                "and idempotency_key = %s and request_hash = %s and created_by is not distinct from %s",
                (environment, request.idempotency_key, request_hash, user_id),
            )
            row = await cur.fetchone()
        if row is None:
            raise ApiError(
                409,
                "PAYMENT_CHECKOUT_ALREADY_EXISTS",
                "Idempotency key is already used for another checkout request",
                "Use a new idempotencyKey for a different checkout.",
            )
        if row["url"] and row["checkout_session_id"]:
            return row["id"], shapes.checkout_session(row)
        return row["id"], None

    async def create_portal(
        self, actor: Actor, environment: Environment, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A Stripe Billing Portal session for a billing subject that has a customer (from a checkout)."""
        if actor.principal.db_role == "anon":
            raise ApiError(
                401,
                "AUTH_INVALID_CREDENTIALS",
                "Customer portal sessions require an authenticated user",
                "Sign in, and send the user's access token.",
            )
        refuse_agent_keys(
            actor,
            "Agent keys may not open a customer's billing portal: its link signs in to that customer's "
            "Stripe billing (payment methods, invoices, subscriptions).",
            "Let the customer open it, signed in (their access token), or ask the project admin.",
        )
        request = definitions.portal(body)
        api = await self.stripe(environment)
        await self._limit_sessions(actor)
        session_id = str(uuid.uuid4())
        user_id = actor.principal.user_id if actor.principal.db_role == "authenticated" else None
        try:
            async with self._database.transaction_as(actor.principal) as conn:
                cur = conn.cursor()
                await cur.execute(
                    "insert into payments.stripe_customer_portal_sessions (id, environment, subject_type, "
                    "subject_id, "
                    "created_by, return_url, configuration_id) values (%s, %s, %s, %s, %s, %s, %s)",
                    (
                        session_id,
                        environment,
                        *request.subject,
                        user_id,
                        request.return_url,
                        request.configuration,
                    ),
                )
        except psycopg.errors.InsufficientPrivilege:
            raise ApiError(
                403,
                "AUTH_UNAUTHORIZED",
                "Customer portal session creation is not allowed by payments.stripe_customer_portal_sessions "
                "RLS policies",
                "Open the portal for subject {type: 'user', id: <your user id>}; other subjects need a "
                "policy of "
                "the project's (docs/payments.md).",
            ) from None
        async with self._database.as_owner() as cur:
            customer = await customer_mappings.customer_of_subject(
                cur, "stripe", environment, request.subject
            )
        if customer is None:
            message = "No Stripe customer is mapped to this billing subject"
            await self._fail("stripe_customer_portal_sessions", session_id, message)
            raise ApiError(404, "PAYMENT_NOT_FOUND", message, "Have the customer complete a checkout first.")
        params = {
            "customer": customer,
            "return_url": request.return_url,
            "configuration": request.configuration,
        }
        try:
            portal = await api.request("POST", "/v1/billing_portal/sessions", params)
        except ApiError as exc:
            await self._fail("stripe_customer_portal_sessions", session_id, exc.message)
            raise
        async with self._database.as_owner() as cur:
            await cur.execute(
                "update payments.stripe_customer_portal_sessions set status = 'created', customer_id = %s, "
                "url = %s, "
                "raw = %s, last_error = null, updated_at = now() where id = %s returning "
                f"{shapes.PORTAL_COLUMNS}",
                (customer, mirror.text(portal.get("url")), Jsonb(portal), session_id),
            )
            row = await cur.fetchone()
        assert row is not None
        return {"customerPortalSession": shapes.portal_session(row)}

    async def _fail(self, table: str, session_id: str, message: str) -> None:
        async with self._database.as_owner() as cur:
            await cur.execute(
                f"update payments.{table} set status = 'failed', last_error = %s, updated_at = now() where "
                "id = %s",
                (message[:2000], session_id),
            )

    # -- Stripe's webhook ------------------------------------------------------------------------------------

    async def receive_webhook(
        self, environment: Environment, payload: bytes, signature: str | None
    ) -> dict[str, Any]:
        """Verify the signature before anything else; record the event once (a retry of one already
        processed or ignored is answered without applying it again); apply it in the same transaction."""
        if signature is None:
            raise ApiError(
                401,
                "AUTH_UNAUTHORIZED",
                "Missing stripe-signature header",
                "Only Stripe calls this endpoint; it signs every request.",
            )
        ciphertext = await self._state.webhook_ciphertext(
            environment,
            f"{definitions.webhook_secret_name(environment)} is not configured",
            f"POST /api/payments/stripe/{environment}/webhook, or PUT .../config with webhookSecret.",
        )
        secret = self._state.open(
            environment,
            "webhook_secret",
            ciphertext,
            name=definitions.webhook_secret_name(environment),
            fix=f"Set it again: POST /api/payments/stripe/{environment}/webhook, or PUT .../config with "
            "webhookSecret.",
            status=503,
        )
        try:
            verify_signature(payload, signature, secret, self._settings.stripe_webhook_tolerance_seconds)
        except SignatureError as exc:
            raise ApiError(
                400, "INVALID_INPUT", str(exc), "Send the raw body Stripe signed, within 5 minutes."
            ) from None
        event = _event(event_outcome.storable(payload))
        data = event.get("data")
        item = data.get("object") if isinstance(data, dict) else None
        item = item if isinstance(item, dict) else {}
        received = ReceivedEvent(
            event_id=event["id"],
            event_type=event["type"],
            livemode=bool(event.get("livemode")),
            account_id=mirror.text(event.get("account")),
            object_type=mirror.text(item.get("object")),
            object_id=mirror.object_id(item.get("id")),
            payload=event,
        )
        async with self._database.as_owner() as cur:
            handled = await record_and_apply(
                cur, "stripe", environment, received, lambda: events.apply(cur, environment, event)
            )
            await cur.execute(
                "select * from payments.webhook_events where provider = 'stripe' and environment = %s "
                "and provider_event_id = %s",
                (environment, event["id"]),
            )
            row = await cur.fetchone()
        assert row is not None
        return {"received": True, "handled": handled, "event": shapes.webhook_event(row)}


def _event(payload: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        event = None
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not isinstance(event.get("type"), str)
    ):
        raise ApiError(
            400,
            "INVALID_INPUT",
            "The body is not a Stripe event (id, type, data)",
            "Only Stripe calls this endpoint.",
        )
    return event


def _request_hash(
    environment: Environment, request: definitions.CheckoutRequest, metadata: dict[str, str]
) -> str:
    """What makes two checkout requests the same one (an idempotency key's retry)."""
    described = {
        "environment": environment,
        "mode": request.mode,
        "lineItems": [[item.price_id, item.quantity] for item in request.line_items],
        "successUrl": request.success_url,
        "cancelUrl": request.cancel_url,
        "subject": request.subject,
        "customerEmail": request.customer_email,
        "metadata": metadata,
    }
    return hashlib.sha256(orjson.dumps(described, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _path_id(value: str) -> str:
    """A Stripe id as a path segment: letters, digits and `_` only (anything else names nothing)."""
    if not value or len(value) > 255 or not all(ch.isalnum() or ch == "_" for ch in value):
        raise ApiError(
            400, "INVALID_INPUT", "The id is not a Stripe id", "Use the id Stripe gave (prod_..., price_...)."
        )
    return value


def _product_not_found(environment: Environment) -> ApiError:
    return ApiError(
        404,
        "PAYMENT_PRODUCT_NOT_FOUND",
        "Stripe product not found",
        f"List the products with GET /api/payments/stripe/{environment}/catalog/products (POST .../sync "
        "first).",
    )


def _price_not_found(environment: Environment) -> ApiError:
    return ApiError(
        404,
        "PAYMENT_PRICE_NOT_FOUND",
        "Stripe price not found",
        f"List the prices with GET /api/payments/stripe/{environment}/catalog/prices (POST .../sync first).",
    )
