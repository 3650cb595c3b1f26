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

from functools import partial

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.capability import Capability
from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.errors import ApiError
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
from kilnbase.payments.razorpay_routes import RazorpayRoutes
from kilnbase.payments.razorpay_tools import razorpay_tools
from kilnbase.payments.service import Payments
from kilnbase.payments.tools import payments_tools

PREFIX = "/api/payments/stripe"
ENV = PREFIX + "/{environment}"
UNSUPPORTED = ("paystack",)


class PaymentsRoutes:
    def __init__(self, payments: Payments) -> None:
        self.payments = payments

    # -- the admin's, beyond one service call ----------------------------------------------------------------
    async def catalog(self, request: Request) -> Response:
        actor = admin_actor(request)
        env = environment(request, "stripe")
        products = await self.payments.products(actor, env)
        return json_response({"products": products, "prices": await self.payments.prices(actor, env)})

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
        payments = self.payments
        admin = partial(endpoint, who=admin_actor, provider="stripe")
        anyone = partial(endpoint, who=caller, provider="stripe")

        return [
            *account_routes(PREFIX, payments),
            # The app's users.
            Route(
                ENV + "/checkout-sessions",
                anyone(payments.create_checkout, body="required", status=201),
                methods=["POST"],
            ),
            Route(
                ENV + "/customer-portal-sessions",
                anyone(payments.create_portal, body="required", status=201),
                methods=["POST"],
            ),
            # The admin's.
            *environment_routes(PREFIX, "stripe", payments),
            Route(ENV + "/webhook", admin(payments.configure_webhook), methods=["POST"]),
            Route(ENV + "/catalog", self.catalog, methods=["GET"]),
            Route(ENV + "/catalog/products", admin(payments.products, under="products"), methods=["GET"]),
            Route(
                ENV + "/catalog/products",
                admin(payments.create_product, body="required", status=201),
                methods=["POST"],
            ),
            Route(ENV + "/catalog/products/{id}", admin(payments.product, path_id="id"), methods=["GET"]),
            Route(
                ENV + "/catalog/products/{id}",
                admin(payments.update_product, path_id="id", body="required"),
                methods=["PATCH"],
            ),
            Route(
                ENV + "/catalog/products/{id}",
                admin(payments.delete_product, path_id="id"),
                methods=["DELETE"],
            ),
            Route(
                ENV + "/catalog/prices",
                admin(payments.prices, query=definitions.price_list_query, under="prices"),
                methods=["GET"],
            ),
            Route(
                ENV + "/catalog/prices",
                admin(payments.create_price, body="required", status=201),
                methods=["POST"],
            ),
            Route(ENV + "/catalog/prices/{id}", admin(payments.price, path_id="id"), methods=["GET"]),
            Route(
                ENV + "/catalog/prices/{id}",
                admin(payments.update_price, path_id="id", body="required"),
                methods=["PATCH"],
            ),
            Route(
                ENV + "/catalog/prices/{id}", admin(payments.archive_price, path_id="id"), methods=["DELETE"]
            ),
            Route(
                ENV + "/subscriptions",
                admin(payments.subscriptions, query=definitions.list_query, under="subscriptions"),
                methods=["GET"],
            ),
            *history_routes(PREFIX, "stripe", payments.transactions, payments.customers),
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
