"""`/api/auth/jwt-providers` (admin): the external identity providers whose tokens the project accepts.
InsForge's routes, shapes and messages; the service (`jwt_providers.JwtProviders`) checks rights, refuses
agent keys' changes and audits."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.auth.jwt_providers import JwtProviders
from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.json_body import decode_json
from kilnbase.http.responses import json_response

PREFIX = "/api/auth/jwt-providers"


class JwtProviderRoutes:
    def __init__(self, providers: JwtProviders) -> None:
        self.providers = providers

    async def list_providers(self, request: Request) -> Response:
        return json_response({"providers": await self.providers.list(admin_actor(request))})

    async def get_provider(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(await self.providers.get(actor, request.path_params["provider_key"]))

    async def create_provider(self, request: Request) -> Response:
        actor = admin_actor(request)
        body = decode_json(await request.body(), optional=True)
        return json_response(await self.providers.create(actor, body), 201)

    async def update_provider(self, request: Request) -> Response:
        actor = admin_actor(request)
        body = decode_json(await request.body(), optional=True)
        key = request.path_params["provider_key"]
        return json_response(await self.providers.update(actor, key, body))

    async def delete_provider(self, request: Request) -> Response:
        await self.providers.delete(admin_actor(request), request.path_params["provider_key"])
        return json_response({"message": "JWT provider deleted successfully"})

    def routes(self) -> list[BaseRoute]:
        return [
            Route(PREFIX, self.list_providers, methods=["GET"]),
            Route(PREFIX, self.create_provider, methods=["POST"]),
            Route(PREFIX + "/{provider_key}", self.get_provider, methods=["GET"]),
            Route(PREFIX + "/{provider_key}", self.update_provider, methods=["PATCH"]),
            Route(PREFIX + "/{provider_key}", self.delete_provider, methods=["DELETE"]),
        ]
