"""Kilnbase's administration of the gateway under `/api/ai` (admin): InsForge's configurations, usage and
credential settings, and Kilnbase's gateway keys, limits, policy, providers and prices. Bodies are parsed by
the models of `admin_requests.py`; every change is audited by `Admin`. Errors take InsForge's shape.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.ai import admin_requests, credentials
from kilnbase.ai.admin import Admin, usage_records, usage_summary
from kilnbase.ai.edge import insforge_errors
from kilnbase.ai.errors import invalid
from kilnbase.ai.service import AiService
from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.json_body import read_model
from kilnbase.http.query_params import int_param, timestamp_param
from kilnbase.http.responses import json_response


def _scope(request: Request) -> tuple[str, str]:
    """`project/*`; `key/<gateway key id>`; `user/<user id>` or `user/*` (each user); `agent/<agent key id>`
    or `agent/*` (each agent key); `anon/<address>` or `anon/*` (each client address calling with the anon
    key)."""
    return check_scope(request.path_params["scope"], request.path_params["subject"])


#: The longest limits subject (an id, an address, `*`): it is part of the key of the limits' index, which
#: refuses some 2,700 bytes and more (that was a 500).
MAX_SUBJECT = 200


def check_scope(scope: str, subject: str) -> tuple[str, str]:
    """A limits scope and subject as `_scope` describes them (400 otherwise)."""
    if scope not in ("project", "key", "user", "agent", "anon"):
        raise invalid("The scope is one of project, key, user, agent, anon.", param="scope")
    if scope == "project" and subject != "*":
        raise invalid("Project limits use the subject '*'.", param="subject")
    if len(subject) > MAX_SUBJECT:
        message = f"A subject is at most {MAX_SUBJECT} characters: an id, an address or '*'."
        raise invalid(message, param="subject")
    return scope, subject


class AiAdminRoutes:
    def __init__(self, ai: AiService) -> None:
        self.ai = ai

    def _admin(self, request: Request) -> Admin:
        """The gateway's admin service, acting for this request's admin (403 for anyone else)."""
        return self.ai.admin(admin_actor(request))

    @insforge_errors
    async def list_configurations(self, request: Request) -> Response:
        return json_response(await self._admin(request).list_configurations())

    @insforge_errors
    async def create_configuration(self, request: Request) -> Response:
        admin = self._admin(request)
        body = await read_model(request, admin_requests.ConfigurationCreate)
        return json_response(await admin.create_configuration(body.columns()), 201)

    @insforge_errors
    async def update_configuration(self, request: Request) -> Response:
        admin = self._admin(request)
        body = await read_model(request, admin_requests.ConfigurationUpdate)
        await admin.update_configuration(request.path_params["id"], body.columns())
        return json_response({"message": "AI configuration updated successfully"})

    @insforge_errors
    async def delete_configuration(self, request: Request) -> Response:
        await self._admin(request).delete_configuration(request.path_params["id"])
        return json_response({"message": "AI configuration deleted successfully"})

    @insforge_errors
    async def usage(self, request: Request) -> Response:
        admin = self._admin(request)
        return json_response(
            await usage_records(
                admin.db,
                limit=int_param(request, "limit", 50, 0, 1000),
                offset=int_param(request, "offset", 0, 0, 10**9),
                start=timestamp_param(request, "startDate"),
                end=timestamp_param(request, "endDate"),
            )
        )

    @insforge_errors
    async def usage_summary_route(self, request: Request) -> Response:
        admin = self._admin(request)
        return json_response(
            await usage_summary(
                admin.db,
                start=timestamp_param(request, "startDate"),
                end=timestamp_param(request, "endDate"),
                config_id=request.query_params.get("configId"),
            )
        )

    @insforge_errors
    async def usage_by_config(self, request: Request) -> Response:
        admin = self._admin(request)
        result = await usage_records(
            admin.db,
            limit=int_param(request, "limit", 1000, 0, 1000),
            offset=int_param(request, "offset", 0, 0, 10**9),
            start=timestamp_param(request, "startDate"),
            end=timestamp_param(request, "endDate"),
            config_id=request.path_params["configId"],
        )
        return json_response(result["records"])

    @insforge_errors
    async def gateway_config(self, request: Request) -> Response:
        return json_response(await self._admin(request).credential_status())

    @insforge_errors
    async def set_gateway_config(self, request: Request) -> Response:
        admin = self._admin(request)
        body = await read_model(request, admin_requests.GatewayCredential)
        await admin.set_credential(credentials.OPENROUTER_KEY, body.apiKey, validate=True)
        return json_response(await admin.credential_status())

    @insforge_errors
    async def delete_gateway_config(self, request: Request) -> Response:
        admin = self._admin(request)
        await admin.delete_credential(credentials.OPENROUTER_KEY)
        return json_response(await admin.credential_status())

    @insforge_errors
    async def get_config(self, request: Request) -> Response:
        return json_response(await self._admin(request).insforge_config())

    @insforge_errors
    async def put_config(self, request: Request) -> Response:
        admin = self._admin(request)
        body = await read_model(request, admin_requests.InsforgeConfig)
        if body.apiKey is not None:
            await admin.set_credential(credentials.OPENROUTER_KEY, body.apiKey, validate=True)
        if body.managementKey is not None:
            await admin.set_credential(credentials.MANAGEMENT_KEY, body.managementKey, validate=False)
        return json_response(await admin.insforge_config())

    @insforge_errors
    async def list_keys(self, request: Request) -> Response:
        return json_response(await self._admin(request).list_keys())

    @insforge_errors
    async def create_key(self, request: Request) -> Response:
        admin = self._admin(request)
        body = await read_model(request, admin_requests.KeyCreate)
        limits = (body.limits or admin_requests.Limits()).columns()
        return json_response(await admin.create_key(body.name, body.models, body.maxTokens, limits), 201)

    @insforge_errors
    async def revoke_key(self, request: Request) -> Response:
        await self._admin(request).revoke_key(request.path_params["id"])
        return json_response({"message": "Gateway key revoked"})

    @insforge_errors
    async def list_limits(self, request: Request) -> Response:
        return json_response(await self._admin(request).list_limits())

    @insforge_errors
    async def put_limits(self, request: Request) -> Response:
        admin = self._admin(request)
        scope, subject = _scope(request)
        body = await read_model(request, admin_requests.Limits)
        return json_response(await admin.put_limits(scope, subject, body.columns()))

    @insforge_errors
    async def delete_limits(self, request: Request) -> Response:
        admin = self._admin(request)
        await admin.delete_limits(*_scope(request))
        return json_response({"message": "Limits removed"})

    @insforge_errors
    async def get_policy(self, request: Request) -> Response:
        return json_response(await self._admin(request).get_policy())

    @insforge_errors
    async def put_policy(self, request: Request) -> Response:
        admin = self._admin(request)
        body = await read_model(request, admin_requests.PolicyUpdate)
        return json_response(await admin.put_policy(body.model_dump()))

    @insforge_errors
    async def list_providers(self, request: Request) -> Response:
        return json_response(await self._admin(request).list_providers())

    @insforge_errors
    async def put_provider(self, request: Request) -> Response:
        admin = self._admin(request)
        body = await read_model(request, admin_requests.ProviderPut)
        if request.path_params["name"] == "openrouter":
            raise invalid("'openrouter' is built in; set its key under /api/ai/gateway/config.", param="name")
        return json_response(await admin.put_provider(request.path_params["name"], body.baseUrl, body.apiKey))

    @insforge_errors
    async def delete_provider(self, request: Request) -> Response:
        await self._admin(request).delete_provider(request.path_params["name"])
        return json_response({"message": "Provider removed"})

    @insforge_errors
    async def list_prices(self, request: Request) -> Response:
        return json_response(await self._admin(request).list_prices())

    @insforge_errors
    async def put_price(self, request: Request) -> Response:
        admin = self._admin(request)
        model_id = request.path_params["model_id"]
        # (the key of the prices' index, which refuses some 2,700 bytes and more: that was a 500)
        if len(model_id) > admin_requests.MAX_MODEL_ID:
            longest = admin_requests.MAX_MODEL_ID
            raise invalid(f"A model id is at most {longest} characters.", param="model_id")
        body = await read_model(request, admin_requests.PricePut)
        return json_response(await admin.put_price(model_id, body.columns()))

    @insforge_errors
    async def delete_price(self, request: Request) -> Response:
        await self._admin(request).delete_price(request.path_params["model_id"])
        return json_response({"message": "Price removed"})

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/ai/configurations", self.list_configurations, methods=["GET"]),
            Route("/api/ai/configurations", self.create_configuration, methods=["POST"]),
            Route("/api/ai/configurations/{id}", self.update_configuration, methods=["PATCH"]),
            Route("/api/ai/configurations/{id}", self.delete_configuration, methods=["DELETE"]),
            Route("/api/ai/usage", self.usage, methods=["GET"]),
            Route("/api/ai/usage/summary", self.usage_summary_route, methods=["GET"]),
            Route("/api/ai/usage/config/{configId}", self.usage_by_config, methods=["GET"]),
            Route("/api/ai/gateway/config", self.gateway_config, methods=["GET"]),
            Route("/api/ai/gateway/config", self.set_gateway_config, methods=["POST"]),
            Route("/api/ai/gateway/config", self.delete_gateway_config, methods=["DELETE"]),
            Route("/api/ai/config", self.get_config, methods=["GET"]),
            Route("/api/ai/config", self.put_config, methods=["PUT"]),
            Route("/api/ai/gateway/keys", self.list_keys, methods=["GET"]),
            Route("/api/ai/gateway/keys", self.create_key, methods=["POST"]),
            Route("/api/ai/gateway/keys/{id}", self.revoke_key, methods=["DELETE"]),
            Route("/api/ai/limits", self.list_limits, methods=["GET"]),
            Route("/api/ai/limits/{scope}/{subject}", self.put_limits, methods=["PUT"]),
            Route("/api/ai/limits/{scope}/{subject}", self.delete_limits, methods=["DELETE"]),
            Route("/api/ai/policy", self.get_policy, methods=["GET"]),
            Route("/api/ai/policy", self.put_policy, methods=["PUT"]),
            Route("/api/ai/providers", self.list_providers, methods=["GET"]),
            Route("/api/ai/providers/{name}", self.put_provider, methods=["PUT"]),
            Route("/api/ai/providers/{name}", self.delete_provider, methods=["DELETE"]),
            Route("/api/ai/prices", self.list_prices, methods=["GET"]),
            Route("/api/ai/prices/{model_id:path}", self.put_price, methods=["PUT"]),
            Route("/api/ai/prices/{model_id:path}", self.delete_price, methods=["DELETE"]),
        ]
