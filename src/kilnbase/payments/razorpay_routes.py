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

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import read_object
from kilnbase.http.request_context import actor_of, admin_actor, require_credential
from kilnbase.http.responses import json_response
from kilnbase.identity.actor import Actor
from kilnbase.payments import definitions
from kilnbase.payments.definitions import Environment
from kilnbase.payments.service import Payments

PREFIX = "/api/payments/razorpay"
ENV = PREFIX + "/{environment}"


def _caller(request: Request) -> Actor:
    return actor_of(request, require_credential(request))


def _environment(request: Request) -> Environment:
    return definitions.environment_of(request.path_params["environment"], "razorpay")


class RazorpayRoutes:
    def __init__(self, payments: Payments) -> None:
        self.payments = payments
        self.razorpay = payments.razorpay

    # -- the app's users -------------------------------------------------------------------------------------
    async def create_order(self, request: Request) -> Response:
        actor, environment = _caller(request), _environment(request)
        body = await read_object(request, optional=False)
        return json_response(await self.razorpay.create_order(actor, environment, body), 201)

    async def verify_order(self, request: Request) -> Response:
        actor, environment = _caller(request), _environment(request)
        body = await read_object(request, optional=False)
        return json_response(await self.razorpay.verify_order(actor, environment, body))

    async def create_subscription(self, request: Request) -> Response:
        actor, environment = _caller(request), _environment(request)
        body = await read_object(request, optional=False)
        return json_response(await self.razorpay.create_subscription(actor, environment, body), 201)

    async def verify_subscription(self, request: Request) -> Response:
        actor, environment = _caller(request), _environment(request)
        body = await read_object(request, optional=False)
        return json_response(await self.razorpay.verify_subscription(actor, environment, body))

    async def manage_subscription(self, request: Request) -> Response:
        actor, environment = _caller(request), _environment(request)
        body = await read_object(request)
        action = request.url.path.rsplit("/", 1)[-1]
        subscription_id = request.path_params["subscriptionId"]
        answer = await self.razorpay.manage_subscription(actor, environment, subscription_id, action, body)
        return json_response(answer)

    # -- the admin's -----------------------------------------------------------------------------------------
    async def status(self, request: Request) -> Response:
        return json_response(await self.razorpay.status(admin_actor(request)))

    async def config(self, request: Request) -> Response:
        return json_response(await self.razorpay.config(_caller(request)))

    async def sync_all(self, request: Request) -> Response:
        return json_response(await self.razorpay.sync(admin_actor(request), None))

    async def set_config(self, request: Request) -> Response:
        actor, environment = _caller(request), _environment(request)
        body = await read_object(request, optional=False)
        return json_response(await self.razorpay.set_config(actor, environment, body))

    async def remove_config(self, request: Request) -> Response:
        actor = _caller(request)
        return json_response(await self.razorpay.remove_config(actor, _environment(request)))

    async def sync(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(await self.razorpay.sync(actor, _environment(request)))

    async def webhook(self, request: Request) -> Response:
        actor = _caller(request)
        return json_response(await self.razorpay.webhook_setup(actor, _environment(request), rotate=False))

    async def rotate_webhook_secret(self, request: Request) -> Response:
        actor = _caller(request)
        return json_response(await self.razorpay.webhook_setup(actor, _environment(request), rotate=True))

    async def catalog(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(await self.razorpay.catalog(actor, _environment(request)))

    async def create_item(self, request: Request) -> Response:
        actor, environment = admin_actor(request), _environment(request)
        body = await read_object(request, optional=False)
        return json_response(await self.razorpay.create_item(actor, environment, body), 201)

    async def update_item(self, request: Request) -> Response:
        actor, environment = admin_actor(request), _environment(request)
        body = await read_object(request, optional=False)
        item_id = request.path_params["itemId"]
        return json_response(await self.razorpay.update_item(actor, environment, item_id, body))

    async def create_plan(self, request: Request) -> Response:
        actor, environment = admin_actor(request), _environment(request)
        body = await read_object(request, optional=False)
        return json_response(await self.razorpay.create_plan(actor, environment, body), 201)

    async def transactions(self, request: Request) -> Response:
        actor, environment = admin_actor(request), _environment(request)
        query = definitions.list_query(dict(request.query_params))
        rows = await self.payments.transactions(actor, environment, query, "razorpay")
        return json_response({"transactions": rows})

    async def subscriptions(self, request: Request) -> Response:
        actor, environment = admin_actor(request), _environment(request)
        query = definitions.list_query(dict(request.query_params))
        return json_response(
            await self.razorpay.subscriptions(actor, environment, query.subject, query.limit)
        )

    async def customers(self, request: Request) -> Response:
        actor, environment = admin_actor(request), _environment(request)
        limit = definitions.customer_list_query(dict(request.query_params))
        return json_response(await self.payments.customers.list(actor, "razorpay", environment, limit))

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
        subscription = ENV + "/subscriptions/{subscriptionId}/"
        return [
            Route(PREFIX + "/status", self.status, methods=["GET"]),
            Route(PREFIX + "/config", self.config, methods=["GET"]),
            Route(PREFIX + "/sync", self.sync_all, methods=["POST"]),
            Route(ENV + "/orders", self.create_order, methods=["POST"]),
            Route(ENV + "/orders/verify", self.verify_order, methods=["POST"]),
            Route(ENV + "/subscriptions", self.create_subscription, methods=["POST"]),
            Route(ENV + "/subscriptions/verify", self.verify_subscription, methods=["POST"]),
            *(
                Route(subscription + action, self.manage_subscription, methods=["POST"])
                for action in ("cancel", "pause", "resume")
            ),
            Route(ENV + "/config", self.set_config, methods=["PUT"]),
            Route(ENV + "/config", self.remove_config, methods=["DELETE"]),
            Route(ENV + "/sync", self.sync, methods=["POST"]),
            Route(ENV + "/webhook", self.webhook, methods=["GET"]),
            Route(ENV + "/webhook/rotate-secret", self.rotate_webhook_secret, methods=["POST"]),
            Route(ENV + "/catalog", self.catalog, methods=["GET"]),
            Route(ENV + "/catalog/items", self.create_item, methods=["POST"]),
            Route(ENV + "/catalog/items/{itemId}", self.update_item, methods=["PATCH"]),
            Route(ENV + "/catalog/plans", self.create_plan, methods=["POST"]),
            Route(ENV + "/transactions", self.transactions, methods=["GET"]),
            Route(ENV + "/subscriptions", self.subscriptions, methods=["GET"]),
            Route(ENV + "/customers", self.customers, methods=["GET"]),
            Route("/api/webhooks/razorpay/{environment}", self.receive, methods=["POST"]),
        ]
