"""`/api/payments/razorpay/...` and `/api/webhooks/razorpay/:environment`: InsForge's routes, shapes, codes
and messages (`backend/src/api/routes/payments/razorpay/`, `routes/webhooks/razorpay.routes.ts`).

Who may call what, as for Stripe (`routes.py`): a caller with any valid credential creates and verifies
orders (the anon key too, for a one-time purchase), and creates, verifies and manages subscriptions (a
signed-in user or the API key: a subscription is always somebody's); everything else is the admin's, with
agent keys reaching it as their `payments:read` / `payments:write` scopes say, apart from the keys and the
webhook secret, which the service refuses to every agent key. The webhook receiver takes no credential:
Razorpay's signature is its proof.
"""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import read_object
from kilnbase.http.responses import json_response
from kilnbase.payments import definitions
from kilnbase.payments.provider_routes import (
    account_routes,
    caller,
    endpoint,
    environment,
    environment_routes,
    history_routes,
)
from kilnbase.payments.service import Payments

PREFIX = "/api/payments/razorpay"
ENV = PREFIX + "/{environment}"


class RazorpayRoutes:
    def __init__(self, payments: Payments) -> None:
        self.payments = payments
        self.razorpay = payments.razorpay

    async def manage_subscription(self, request: Request) -> Response:
        actor, env = caller(request), environment(request, "razorpay")
        body = await read_object(request)
        action = request.url.path.rsplit("/", 1)[-1]
        subscription_id = request.path_params["subscriptionId"]
        answer = await self.razorpay.manage_subscription(actor, env, subscription_id, action, body)
        return json_response(answer)

    # -- the admin's, beyond one service call ----------------------------------------------------------------
    async def subscriptions(self, request: Request) -> Response:
        actor, env = admin_actor(request), environment(request, "razorpay")
        query = definitions.list_query(dict(request.query_params))
        return json_response(await self.razorpay.subscriptions(actor, env, query.subject, query.limit))

    # -- Razorpay --------------------------------------------------------------------------------------------
    async def receive(self, request: Request) -> Response:
        environment = request.path_params["environment"]
        if environment not in definitions.ENVIRONMENTS:
            raise ApiError(
                400,
                "INVALID_INPUT",
                f"environment: Invalid enum value. Expected 'test' | 'live', received '{environment[:40]}'",
                "Razorpay calls .../razorpay/test or .../razorpay/live.",
            )
        payload = await request.body()
        answer = await self.razorpay.receive_webhook(
            definitions.environment_of(environment),
            payload,
            request.headers.get("x-razorpay-signature"),
            request.headers.get("x-razorpay-event-id"),
        )
        return json_response(answer)

    def routes(self) -> list[BaseRoute]:
        razorpay = self.razorpay
        admin = partial(endpoint, who=admin_actor, provider="razorpay")
        anyone = partial(endpoint, who=caller, provider="razorpay")
        subscription = ENV + "/subscriptions/{subscriptionId}/"
        return [
            *account_routes(PREFIX, razorpay),
            # The app's users.
            Route(
                ENV + "/orders", anyone(razorpay.create_order, body="required", status=201), methods=["POST"]
            ),
            Route(ENV + "/orders/verify", anyone(razorpay.verify_order, body="required"), methods=["POST"]),
            Route(
                ENV + "/subscriptions",
                anyone(razorpay.create_subscription, body="required", status=201),
                methods=["POST"],
            ),
            Route(
                ENV + "/subscriptions/verify",
                anyone(razorpay.verify_subscription, body="required"),
                methods=["POST"],
            ),
            *(
                Route(subscription + action, self.manage_subscription, methods=["POST"])
                for action in ("cancel", "pause", "resume")
            ),
            # The admin's.
            *environment_routes(PREFIX, "razorpay", razorpay),
            Route(ENV + "/webhook", anyone(partial(razorpay.webhook_setup, rotate=False)), methods=["GET"]),
            Route(
                ENV + "/webhook/rotate-secret",
                anyone(partial(razorpay.webhook_setup, rotate=True)),
                methods=["POST"],
            ),
            Route(ENV + "/catalog", admin(razorpay.catalog), methods=["GET"]),
            Route(
                ENV + "/catalog/items",
                admin(razorpay.create_item, body="required", status=201),
                methods=["POST"],
            ),
            Route(
                ENV + "/catalog/items/{itemId}",
                admin(razorpay.update_item, path_id="itemId", body="required"),
                methods=["PATCH"],
            ),
            Route(
                ENV + "/catalog/plans",
                admin(razorpay.create_plan, body="required", status=201),
                methods=["POST"],
            ),
            Route(ENV + "/subscriptions", self.subscriptions, methods=["GET"]),
            *history_routes(PREFIX, "razorpay", self.payments.transactions, self.payments.customers),
            Route("/api/webhooks/razorpay/{environment}", self.receive, methods=["POST"]),
        ]
