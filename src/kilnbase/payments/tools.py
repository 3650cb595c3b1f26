"""The payments capability's MCP tools: the same `Payments` calls as `/api/payments/stripe/...` (admin,
audited by the service). Agent keys reach the read tools with `payments:read` and the catalog's writes with
`payments:write`; no tool sets or reads the Stripe keys (a person does, over the API or the dashboard)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from kilnbase.capability import Tool
from kilnbase.identity.actor import Actor
from kilnbase.payments import definitions
from kilnbase.payments.service import Payments
from kilnbase.payments.tool_arguments import Limit, SubjectId, SubjectType, list_query

EnvironmentArg = Annotated[Literal["test", "live"], Field(description="Stripe's test mode or live mode")]


def payments_tools(payments: Payments) -> list[Tool]:
    async def get_payments_status(actor: Actor) -> dict[str, Any]:
        return await payments.status(actor)

    async def list_stripe_catalog(actor: Actor, environment: EnvironmentArg) -> dict[str, Any]:
        products = await payments.products(actor, environment)
        return {"products": products, "prices": await payments.prices(actor, environment)}

    async def list_payment_transactions(
        actor: Actor,
        environment: EnvironmentArg,
        limit: Limit = definitions.DEFAULT_LIST,
        subjectType: SubjectType = None,
        subjectId: SubjectId = None,
    ) -> dict[str, Any]:
        query = list_query(limit, subjectType, subjectId)
        return {"transactions": await payments.transactions(actor, environment, query)}

    async def list_stripe_subscriptions(
        actor: Actor,
        environment: EnvironmentArg,
        limit: Limit = definitions.DEFAULT_LIST,
        subjectType: SubjectType = None,
        subjectId: SubjectId = None,
    ) -> dict[str, Any]:
        query = list_query(limit, subjectType, subjectId)
        return {"subscriptions": await payments.subscriptions(actor, environment, query)}

    async def list_stripe_customers(
        actor: Actor, environment: EnvironmentArg, limit: Limit = definitions.DEFAULT_LIST
    ) -> dict[str, Any]:
        return await payments.customers.list(actor, "stripe", environment, limit)

    async def sync_stripe_payments(actor: Actor, environment: EnvironmentArg) -> dict[str, Any]:
        return await payments.sync(actor, environment)

    async def create_stripe_product(
        actor: Actor,
        environment: EnvironmentArg,
        name: Annotated[str, Field(min_length=1, max_length=250)],
        description: Annotated[str | None, Field(max_length=5000)] = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name}
        if description is not None:
            body["description"] = description
        return await payments.create_product(actor, environment, body)

    async def create_stripe_price(
        actor: Actor,
        environment: EnvironmentArg,
        productId: Annotated[str, Field(min_length=1, max_length=255)],
        currency: Annotated[str, Field(description="ISO code, as usd", min_length=3, max_length=3)],
        unitAmount: Annotated[int, Field(description="In the currency's smallest unit (cents)", ge=0)],
        interval: Annotated[
            Literal["day", "week", "month", "year"] | None,
            Field(description="For a subscription price: how often it bills"),
        ] = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"productId": productId, "currency": currency, "unitAmount": unitAmount}
        if interval is not None:
            body["recurring"] = {"interval": interval}
        return await payments.create_price(actor, environment, body)

    return [
        Tool(
            "get-payments-status",
            "Stripe's connection per environment (test, live): account, webhook endpoint, last catalog sync.",
            get_payments_status,
        ),
        Tool(
            "list-stripe-catalog",
            "The Stripe products and prices mirrored for an environment.",
            list_stripe_catalog,
        ),
        Tool(
            "list-payment-transactions",
            "The payment history (one-time payments, subscription invoices, refunds), newest first.",
            list_payment_transactions,
        ),
        Tool(
            "list-stripe-subscriptions",
            "The Stripe subscriptions and their items.",
            list_stripe_subscriptions,
        ),
        Tool(
            "list-stripe-customers",
            "The Stripe customers, with their payment count, last payment, total spend and default card.",
            list_stripe_customers,
        ),
        Tool(
            "sync-stripe-payments",
            "Mirror an environment's Stripe catalog (products and prices) and customers again.",
            sync_stripe_payments,
            read_only=False,
        ),
        Tool(
            "create-stripe-product",
            "Create a product in Stripe's catalog.",
            create_stripe_product,
            read_only=False,
        ),
        Tool(
            "create-stripe-price",
            "Create a price of a product (one-time, or recurring with interval).",
            create_stripe_price,
            read_only=False,
        ),
    ]
