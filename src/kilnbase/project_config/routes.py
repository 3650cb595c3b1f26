"""`/api/config` (InsForge's paths, admin only): `GET` answers `{config}`, the live project config;
`POST /api/config/apply` takes `{config, dry_run?, prune?}` and answers `{plan: {changes, summary},
applied}`. A file the schema refuses is a 400 in InsForge's words, `{error: "config_validation", message,
path}` (with Kilnbase's `statusCode` and `nextActions` beside them).

Agent keys are checked by the service, per section of the file (`service.py`), not by the routes' feature
group: the config is auth's and storage's settings, and their scopes are what decide."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.capability import Capability
from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.errors import error_body
from kilnbase.http.json_body import read_json
from kilnbase.http.responses import json_response
from kilnbase.project_config.schema import ConfigValidationError
from kilnbase.project_config.service import ApplyRequest, ProjectConfig
from kilnbase.project_config.tools import config_tools


class ConfigRoutes:
    def __init__(self, config: ProjectConfig) -> None:
        self.config = config

    async def get(self, request: Request) -> Response:
        return json_response({"config": await self.config.read(admin_actor(request))})

    async def apply(self, request: Request) -> Response:
        actor = admin_actor(request)
        body = ApplyRequest.of(await read_json(request))
        try:
            return json_response(await self.config.apply(actor, body))
        except ConfigValidationError as exc:
            answer = error_body(exc.status, exc.code, exc.message, exc.next_actions)
            return json_response({**answer, "path": exc.path}, status=exc.status)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/config", self.get, methods=["GET"]),
            Route("/api/config/apply", self.apply, methods=["POST"]),
        ]


def capability(config: ProjectConfig) -> Capability:
    return Capability("config", ConfigRoutes(config).routes(), tools=config_tools(config), agent_scoped=False)
