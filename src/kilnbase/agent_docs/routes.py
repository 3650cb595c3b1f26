"""`/api/docs` (public, as in InsForge): the documents `@insforge/mcp`'s `fetch-docs` and `fetch-sdk-docs`
read."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.agent_docs.service import AgentDocs
from kilnbase.agent_docs.tools import docs_resources, docs_tools
from kilnbase.capability import Capability
from kilnbase.http.responses import json_response


class DocsRoutes:
    def __init__(self, docs: AgentDocs) -> None:
        self.docs = docs

    async def index(self, _request: Request) -> Response:
        return json_response(self.docs.index())

    async def doc_type(self, request: Request) -> Response:
        return json_response(self.docs.doc_type(request.path_params["doc_type"]).json())

    async def sdk(self, request: Request) -> Response:
        feature, language = request.path_params["feature"], request.path_params["language"]
        return json_response(self.docs.sdk(feature, language).json())

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/docs", self.index, methods=["GET"]),
            Route("/api/docs/{doc_type}", self.doc_type, methods=["GET"]),
            Route("/api/docs/{feature}/{language}", self.sdk, methods=["GET"]),
        ]


def capability(docs: AgentDocs) -> Capability:
    # Public, as InsForge's docs are: an agent key needs no scope to read them.
    return Capability(
        "agent_docs",
        DocsRoutes(docs).routes(),
        tools=docs_tools(docs),
        resources=docs_resources(docs),
        agent_scoped=False,
    )
