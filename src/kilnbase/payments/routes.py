"""`/api/payments/stripe/...` and `/api/webhooks/stripe/:environment`: InsForge's routes, shapes, codes and
messages (`backend/src/api/routes/payments/stripe/`, `routes/webhooks/stripe.routes.ts`).

Who may call what: a signed-in caller (any valid credential: a user's token, the anon key for a one-time
purchase, the API key) starts checkout and portal sessions; everything else is the admin's, with agent keys
reaching it as their `payments:read` / `payments:write` scopes say, apart from the Stripe keys, which the
service refuses to every agent key. The webhook receiver takes no credential: Stripe's signature is its proof.

Razorpay's routes are `razorpay_routes.py`'s. Paystack is not here: its paths answer 501
`PAYMENT_PROVIDER_NOT_SUPPORTED`, saying so.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.capability import Capability
from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import read_object
from kilnbase.http.request_context import actor_of, admin_actor, require_credential
from kilnbase.http.responses import json_response
from kilnbase.identity.actor import Actor
from kilnbase.payments import definitions
from kilnbase.payments.definitions import Environment
from kilnbase.payments.razorpay_routes import RazorpayRoutes
from kilnbase.payments.razorpay_tools import razorpay_tools
from kilnbase.payments.service import Payments
from kilnbase.payments.tools import payments_tools

PREFIX = "/api/payments/stripe"
ENV = PREFIX + "/{environment}"
UNSUPPORTED = ("paystack",)


def _caller(request: Request) -> Actor:
    """Any valid credential (401 without one); the service decides the rest, and audits its refusals."""
    return actor_of(request, require_credential(request))


def _environment(request: Request) -> Environment:
    return definitions.environment_of(request.path_params["environment"])


class PaymentsRoutes:
    def __init__(self, payments: Payments) -> None:
        self.payments = payments

    # -- the app's users -------------------------------------------------------------------------------------
    async def checkout(self, request: Request) -> Response:
        actor = _caller(request)
        environment = _environment(request)
        body = await read_object(request, optional=False)
        return json_response(await self.payments.create_checkout(actor, environment, body), 201)

    async def portal(self, request: Request) -> Response:
        actor = _caller(request)
        environment = _environment(request)
        body = await read_object(request, optional=False)
        return json_response(await self.payments.create_portal(actor, environment, body), 201)

    # -- the admin's -----------------------------------------------------------------------------------------
    async def status(self, request: Request) -> Response:
        return json_response(await self.payments.status(admin_actor(request)))

    async def config(self, request: Request) -> Response:
        return json_response(await self.payments.config(_caller(request)))

    async def sync_all(self, request: Request) -> Response:
        return json_response(await self.payments.sync(admin_actor(request), None))

    async def set_config(self, request: Request) -> Response:
        actor = _caller(request)
        environment = _environment(request)
        body = await read_object(request, optional=False)
        return json_response(await self.payments.set_config(actor, environment, body))

    async def remove_config(self, request: Request) -> Response:
        actor = _caller(request)
        return json_response(await self.payments.remove_config(actor, _environment(request)))

    async def sync(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(await self.payments.sync(actor, _environment(request)))

    async def webhook_setup(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(await self.payments.configure_webhook(actor, _environment(request)))

    async def catalog(self, request: Request) -> Response:
        actor = admin_actor(request)
        environment = _environment(request)
        products = await self.payments.products(actor, environment)
        return json_response({"products": products, "prices": await self.payments.prices(actor, environment)})

    async def products(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response({"products": await self.payments.products(actor, _environment(request))})

    async def product(self, request: Request) -> Response:
        actor = admin_actor(request)
        environment = _environment(request)
        return json_response(await self.payments.product(actor, environment, request.path_params["id"]))

    async def create_product(self, request: Request) -> Response:
        actor = admin_actor(request)
        environment = _environment(request)
        body = await read_object(request, optional=False)
        return json_response(await self.payments.create_product(actor, environment, body), 201)

    async def update_product(self, request: Request) -> Response:
        actor = admin_actor(request)
        environment = _environment(request)
        body = await read_object(request, optional=False)
        product_id = request.path_params["id"]
        return json_response(await self.payments.update_product(actor, environment, product_id, body))

    async def delete_product(self, request: Request) -> Response:
        actor = admin_actor(request)
        environment = _environment(request)
        return json_response(
            await self.payments.delete_product(actor, environment, request.path_params["id"])
        )

    async def prices(self, request: Request) -> Response:
        actor = admin_actor(request)
        environment = _environment(request)
        product_id = definitions.price_list_query(dict(request.query_params))
        return json_response({"prices": await self.payments.prices(actor, environment, product_id)})

    async def price(self, request: Request) -> Response:
        actor = admin_actor(request)
        environment = _environment(request)
        return json_response(await self.payments.price(actor, environment, request.path_params["id"]))

    async def create_price(self, request: Request) -> Response:
        actor = admin_actor(request)
        environment = _environment(request)
        body = await read_object(request, optional=False)
        return json_response(await self.payments.create_price(actor, environment, body), 201)

    async def update_price(self, request: Request) -> Response:
        actor = admin_actor(request)
        environment = _environment(request)
        body = await read_object(request, optional=False)
        price_id = request.path_params["id"]
        return json_response(await self.payments.update_price(actor, environment, price_id, body))

    async def archive_price(self, request: Request) -> Response:
        actor = admin_actor(request)
        environment = _environment(request)
        return json_response(await self.payments.archive_price(actor, environment, request.path_params["id"]))

    async def transactions(self, request: Request) -> Response:
        actor = admin_actor(request)
        environment = _environment(request)
        query = definitions.list_query(dict(request.query_params))
        return json_response({"transactions": await self.payments.transactions(actor, environment, query)})

    async def subscriptions(self, request: Request) -> Response:
        actor = admin_actor(request)
        environment = _environment(request)
        query = definitions.list_query(dict(request.query_params))
        return json_response({"subscriptions": await self.payments.subscriptions(actor, environment, query)})

    async def customers(self, request: Request) -> Response:
        actor = admin_actor(request)
        environment = _environment(request)
        limit = definitions.customer_list_query(dict(request.query_params))
        return json_response(await self.payments.customers.list(actor, "stripe", environment, limit))

    # -- Stripe ----------------------------------------------------------------------------------------------
    async def receive(self, request: Request) -> Response:
        environment = request.path_params["environment"]
        if environment not in definitions.ENVIRONMENTS:
            raise ApiError(
                400,
                "INVALID_INPUT",
                "Invalid Stripe environment",
                "Stripe calls .../stripe/test or .../stripe/live.",
            )
        payload = await request.body()
        signature = request.headers.get("stripe-signature")
        answer = await self.payments.receive_webhook(
            definitions.environment_of(environment), payload, signature
        )
        return json_response(answer)

    async def other_provider(self, request: Request) -> Response:
        provider = request.url.path.split("/")[3]
        raise ApiError(
            501,
            "PAYMENT_PROVIDER_NOT_SUPPORTED",
            f"{provider.capitalize()} payments are not available on this server: Kilnbase offers Stripe "
            "and Razorpay.",
            "Use Stripe or Razorpay: /api/payments/stripe/:environment/... or "
            "/api/payments/razorpay/:environment/... (docs/payments.md).",
        )

    def routes(self) -> list[BaseRoute]:
        return [
            Route(PREFIX + "/status", self.status, methods=["GET"]),
            Route(PREFIX + "/config", self.config, methods=["GET"]),
            Route(PREFIX + "/sync", self.sync_all, methods=["POST"]),
            Route(ENV + "/checkout-sessions", self.checkout, methods=["POST"]),
            Route(ENV + "/customer-portal-sessions", self.portal, methods=["POST"]),
            Route(ENV + "/config", self.set_config, methods=["PUT"]),
            Route(ENV + "/config", self.remove_config, methods=["DELETE"]),
            Route(ENV + "/sync", self.sync, methods=["POST"]),
            Route(ENV + "/webhook", self.webhook_setup, methods=["POST"]),
            Route(ENV + "/catalog", self.catalog, methods=["GET"]),
            Route(ENV + "/catalog/products", self.products, methods=["GET"]),
            Route(ENV + "/catalog/products", self.create_product, methods=["POST"]),
            Route(ENV + "/catalog/products/{id}", self.product, methods=["GET"]),
            Route(ENV + "/catalog/products/{id}", self.update_product, methods=["PATCH"]),
            Route(ENV + "/catalog/products/{id}", self.delete_product, methods=["DELETE"]),
            Route(ENV + "/catalog/prices", self.prices, methods=["GET"]),
            Route(ENV + "/catalog/prices", self.create_price, methods=["POST"]),
            Route(ENV + "/catalog/prices/{id}", self.price, methods=["GET"]),
            Route(ENV + "/catalog/prices/{id}", self.update_price, methods=["PATCH"]),
            Route(ENV + "/catalog/prices/{id}", self.archive_price, methods=["DELETE"]),
            Route(ENV + "/transactions", self.transactions, methods=["GET"]),
            Route(ENV + "/subscriptions", self.subscriptions, methods=["GET"]),
            Route(ENV + "/customers", self.customers, methods=["GET"]),
            Route("/api/webhooks/stripe/{environment}", self.receive, methods=["POST"]),
            *(
                Route(f"/api/{area}/{provider}/{{rest:path}}", self.other_provider, methods=_ALL)
                for area in ("payments", "webhooks")
                for provider in UNSUPPORTED
            ),
        ]


_ALL = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def capability(payments: Payments) -> Capability:
    routes = PaymentsRoutes(payments).routes() + RazorpayRoutes(payments).routes()
    return Capability("payments", routes, tools=payments_tools(payments) + razorpay_tools(payments))
