"""`/api/advisor` (admin): run a scan of the app's database, read its summary and findings, and hide findings
that are known and accepted (suppressions). InsForge's routes, shapes, codes and messages."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.advisor.service import DEFAULT_ISSUE_LIMIT, Advisor, check_filters, invalid
from kilnbase.advisor.tools import advisor_tools
from kilnbase.capability import Capability
from kilnbase.http.admin_gate import admin_actor, audited_admin_caller
from kilnbase.http.json_body import read_object
from kilnbase.http.responses import json_response


def _whole_number(request: Request, name: str, default: int, message: str) -> int:
    """A query parameter that must be a whole number (InsForge's `Number.isInteger`); its range is the
    service's to check."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise invalid(message) from None


class AdvisorRoutes:
    def __init__(self, advisor: Advisor) -> None:
        self.advisor = advisor

    async def scan(self, request: Request) -> Response:
        return json_response(await self.advisor.scan(audited_admin_caller(request)), 201)

    async def latest(self, request: Request) -> Response:
        return json_response(await self.advisor.latest(admin_actor(request)))

    async def issues(self, request: Request) -> Response:
        actor = admin_actor(request)
        query = request.query_params
        severity, category = query.get("severity"), query.get("category")
        limit = _whole_number(
            request, "limit", DEFAULT_ISSUE_LIMIT, "Invalid limit parameter: must be a positive integer"
        )
        offset = _whole_number(
            request, "offset", 0, "Invalid offset parameter: must be a non-negative integer"
        )
        check_filters(severity, category, limit, offset)
        return json_response(
            await self.advisor.issues(actor, severity=severity, category=category, limit=limit, offset=offset)
        )

    async def list_suppressions(self, request: Request) -> Response:
        return json_response({"suppressions": await self.advisor.suppressions(admin_actor(request))})

    async def suppress(self, request: Request) -> Response:
        actor = audited_admin_caller(request)
        created = await self.advisor.suppress(actor, await read_object(request, optional=False))
        return json_response(created, 201)

    async def unsuppress(self, request: Request) -> Response:
        await self.advisor.unsuppress(audited_admin_caller(request), request.path_params["id"])
        return json_response({"deleted": True})

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/advisor/scan", self.scan, methods=["POST"]),
            Route("/api/advisor/latest", self.latest, methods=["GET"]),
            Route("/api/advisor/issues", self.issues, methods=["GET"]),
            Route("/api/advisor/suppressions", self.list_suppressions, methods=["GET"]),
            Route("/api/advisor/suppressions", self.suppress, methods=["POST"]),
            Route("/api/advisor/suppressions/{id}", self.unsuppress, methods=["DELETE"]),
        ]


def capability(advisor: Advisor) -> Capability:
    # A scan changes nothing in the project (it records what it found): a read on REST as its tool is on MCP,
    # though a POST.
    return Capability(
        "advisor", AdvisorRoutes(advisor).routes(), tools=advisor_tools(advisor), reads=("/api/advisor/scan",)
    )
