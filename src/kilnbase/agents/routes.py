"""`/api/agents`: agent keys (admin), the project's agent settings, and session tokens for agents."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.agents.service import MAX_TOKEN_SECONDS, Agents, AgentSettings, NewAgentKey, require_manager
from kilnbase.capability import Capability
from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.json_body import parse, read_json, read_object
from kilnbase.http.request_context import actor_of, require_credential
from kilnbase.http.responses import json_response


class TokenRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    expiresIn: int = Field(default=900, ge=60, le=MAX_TOKEN_SECONDS)


class AgentRoutes:
    def __init__(self, agents: Agents) -> None:
        self.agents = agents

    async def create_key(self, request: Request) -> Response:
        actor = admin_actor(request)
        require_manager(actor)
        body = parse(NewAgentKey, await read_json(request))
        return json_response(await self.agents.create_key(actor, body), status=201)

    async def list_keys(self, request: Request) -> Response:
        return json_response(await self.agents.list_keys(admin_actor(request)))

    async def revoke_key(self, request: Request) -> Response:
        return json_response(await self.agents.revoke_key(admin_actor(request), request.path_params["id"]))

    async def settings(self, request: Request) -> Response:
        return json_response(await self.agents.settings(admin_actor(request)))

    async def update_settings(self, request: Request) -> Response:
        actor = admin_actor(request)
        require_manager(actor)
        return json_response(
            await self.agents.update_settings(actor, parse(AgentSettings, await read_json(request)))
        )

    async def session_token(self, request: Request) -> Response:
        actor = actor_of(request, require_credential(request))
        body = parse(TokenRequest, await read_object(request))
        return json_response(await self.agents.session_token(actor, body.expiresIn), status=201)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/agents/keys", self.list_keys, methods=["GET"]),
            Route("/api/agents/keys", self.create_key, methods=["POST"]),
            Route("/api/agents/keys/{id}", self.revoke_key, methods=["DELETE"]),
            Route("/api/agents/settings", self.settings, methods=["GET"]),
            Route("/api/agents/settings", self.update_settings, methods=["PUT"]),
            Route("/api/agents/tokens", self.session_token, methods=["POST"]),
        ]


def capability(agents: Agents) -> Capability:
    return Capability("agents", AgentRoutes(agents).routes(), agent_scoped=False)
