"""The Razorpay MCP tools: the same `Razorpay` calls as `/api/payments/razorpay/...` (admin, audited by the
service). Agent keys reach the read tools with `payments:read` and the catalog's writes and sync with
`payments:write`; no tool sets or reads the Razorpay keys or its webhook secret (a person does)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from kilnbase.capability import Tool
from kilnbase.identity.actor import Actor
from kilnbase.payments import definitions
from kilnbase.payments.service import Payments
from kilnbase.payments.tool_arguments import Limit, SubjectId, SubjectType, list_query

EnvironmentArg = Annotated[Literal["test", "live"], Field(description="Razorpay's test mode or live mode")]
Amount = Annotated[int, Field(description="In the currency's smallest unit (paise for INR)", ge=1)]
Currency = Annotated[str, Field(description="ISO code, as INR", min_length=3, max_length=3)]


def razorpay_tools(payments: Payments) -> list[Tool]:
    razorpay = payments.razorpay

    async def get_razorpay_status(actor: Actor) -> dict[str, Any]:
        return await razorpay.status(actor)

    async def list_razorpay_catalog(actor: Actor, environment: EnvironmentArg) -> dict[str, Any]:
        return await razorpay.catalog(actor, environment)

    async def list_razorpay_transactions(
        actor: Actor,
        environment: EnvironmentArg,
        limit: Limit = definitions.DEFAULT_LIST,
        subjectType: SubjectType = None,
        subjectId: SubjectId = None,
    ) -> dict[str, Any]:
        query = list_query(limit, subjectType, subjectId)
        return {"transactions": await payments.transactions(actor, environment, query, "razorpay")}

    async def list_razorpay_subscriptions(
        actor: Actor,
        environment: EnvironmentArg,
        limit: Limit = definitions.DEFAULT_LIST,
        subjectType: SubjectType = None,
        subjectId: SubjectId = None,
    ) -> dict[str, Any]:
        query = list_query(limit, subjectType, subjectId)
        return await razorpay.subscriptions(actor, environment, query.subject, query.limit)

    async def list_razorpay_customers(
        actor: Actor, environment: EnvironmentArg, limit: Limit = definitions.DEFAULT_LIST
    ) -> dict[str, Any]:
        return await payments.customers.list(actor, "razorpay", environment, limit)

    async def sync_razorpay_payments(actor: Actor, environment: EnvironmentArg) -> dict[str, Any]:
        return await razorpay.sync(actor, environment)

    async def create_razorpay_item(
        actor: Actor,
        environment: EnvironmentArg,
        name: Annotated[str, Field(min_length=1, max_length=255)],
        amount: Amount,
        currency: Currency,
        description: Annotated[str | None, Field(max_length=2048)] = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "amount": amount, "currency": currency}
        if description is not None:
            body["description"] = description
        return await razorpay.create_item(actor, environment, body)

    async def create_razorpay_plan(
        actor: Actor,
        environment: EnvironmentArg,
        period: Annotated[
            Literal["daily", "weekly", "monthly", "yearly"], Field(description="How often it bills")
        ],
        name: Annotated[str, Field(description="The plan's item name", min_length=1, max_length=255)],
        amount: Amount,
        currency: Currency,
        interval: Annotated[int, Field(description="Every how many periods", ge=1, le=365)] = 1,
    ) -> dict[str, Any]:
        body = {
            "period": period,
            "interval": interval,
            "item": {"name": name, "amount": amount, "currency": currency},
        }
        return await razorpay.create_plan(actor, environment, body)

    return [
        Tool(
            "get-razorpay-status",
            "Razorpay's connection per environment (test, live): key (masked), webhook, last sync.",
            get_razorpay_status,
        ),
        Tool(
            "list-razorpay-catalog",
            "The Razorpay items and plans mirrored for an environment.",
            list_razorpay_catalog,
        ),
        Tool(
            "list-razorpay-transactions",
            "Razorpay's payment history (payments, subscription charges, refunds), newest first.",
            list_razorpay_transactions,
        ),
        Tool("list-razorpay-subscriptions", "The Razorpay subscriptions.", list_razorpay_subscriptions),
        Tool(
            "list-razorpay-customers",
            "The Razorpay customers, with their payment count, last payment and total spend.",
            list_razorpay_customers,
        ),
        Tool(
            "sync-razorpay-payments",
            "Mirror an environment's Razorpay items, plans and subscriptions again.",
            sync_razorpay_payments,
            read_only=False,
        ),
        Tool(
            "create-razorpay-item",
            "Create an item in Razorpay's catalog.",
            create_razorpay_item,
            read_only=False,
        ),
        Tool(
            "create-razorpay-plan",
            "Create a subscription plan (a period, an interval and its item's price).",
            create_razorpay_plan,
            read_only=False,
        ),
    ]
