"""`/api/metadata` (admin): the backend as InsForge's metadata API describes it, and as markdown for
agents."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.capability import Capability
from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.errors import ApiError
from kilnbase.http.responses import json_response
from kilnbase.metadata.service import MetadataService
from kilnbase.metadata.tools import metadata_resources, metadata_tools


class MetadataRoutes:
    def __init__(self, service: MetadataService) -> None:
        self.service = service

    async def overview(self, request: Request) -> Response:
        actor = admin_actor(request)
        output = request.query_params.get("format", "json")
        if output not in ("json", "markdown"):
            raise ApiError(
                400, "INVALID_INPUT", "Invalid format parameter", "Use format=json or format=markdown."
            )
        if output == "markdown":
            text = await self.service.markdown(actor)
            return Response(text, media_type="text/markdown; charset=utf-8")
        if request.query_params.get("mcp") == "true":
            return json_response(await self.service.agent_context(actor))
        return json_response(await self.service.overview(actor))

    async def auth(self, request: Request) -> Response:
        return json_response(await self.service.auth(admin_actor(request)))

    async def database(self, request: Request) -> Response:
        return json_response(await self.service.database_slice(admin_actor(request)))

    async def storage(self, request: Request) -> Response:
        return json_response(await self.service.storage(admin_actor(request)))

    async def functions(self, request: Request) -> Response:
        return json_response(await self.service.functions(admin_actor(request)))

    async def realtime(self, request: Request) -> Response:
        return json_response(await self.service.realtime(admin_actor(request)))

    async def api_key(self, request: Request) -> Response:
        return json_response(await self.service.api_key(admin_actor(request)))

    async def anon_key(self, request: Request) -> Response:
        return json_response(self.service.anon_key(admin_actor(request)))

    async def project_id(self, request: Request) -> Response:
        return json_response(self.service.project_id(admin_actor(request)))

    async def database_credentials(self, request: Request) -> Response:
        """InsForge Cloud's `database-connection-string` and `database-password`: its cloud hands an admin
        the database's own login. Kilnbase does not: that login is the cluster's superuser (the embedded
        one) or the owner of every table, far past what the API key is (`project_admin`, under RLS), and
        the API key is what agents hold. Refused plainly, not read as a table of that name."""
        admin_actor(request)
        raise ApiError(
            403,
            "FORBIDDEN",
            "Kilnbase does not hand out the database's credentials over its API.",
            "Run SQL with POST /api/database/advance/rawsql (MCP run-raw-sql); the server's operator "
            "connects directly with DATABASE_URL, or with the embedded database's credentials in the data "
            "dir (keys.json).",
        )

    async def table(self, request: Request) -> Response:
        return json_response(await self.service.table(admin_actor(request), request.path_params["table"]))

    def routes(self) -> list[BaseRoute]:
        fixed = {
            "auth": self.auth,
            "database": self.database,
            "storage": self.storage,
            "functions": self.functions,
            "realtime": self.realtime,
            "api-key": self.api_key,
            "anon-key": self.anon_key,
            "project-id": self.project_id,
            "database-connection-string": self.database_credentials,
            "database-password": self.database_credentials,
        }
        return [
            Route("/api/metadata", self.overview, methods=["GET"]),
            *(Route(f"/api/metadata/{path}", endpoint, methods=["GET"]) for path, endpoint in fixed.items()),
            # After the fixed paths, as InsForge orders them: a table called `auth` is reached as public.auth.
            Route("/api/metadata/{table}", self.table, methods=["GET"]),
        ]


def capability(service: MetadataService) -> Capability:
    return Capability(
        "metadata",
        MetadataRoutes(service).routes(),
        tools=metadata_tools(service),
        resources=metadata_resources(service),
    )
