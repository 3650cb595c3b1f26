"""The dashboard's landing page: what this server is, whether it is healthy, and how to connect.

Anyone can read it, so it names nothing of the machine it runs on (the data directory's path, say): the
CLI, run where the server runs, already knows those."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from kilnbase import INSFORGE_API_VERSION, __version__
from kilnbase.capability import Capability, Core

_templates = Environment(
    loader=PackageLoader("kilnbase.dashboard", "templates"), autoescape=select_autoescape()
)


class DashboardRoutes:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def status_page(self, _request: Request) -> Response:
        try:
            await self.core.database.ping()
            healthy = True
        except Exception:
            healthy = False
        settings = self.core.settings
        html = _templates.get_template("status.html").render(
            healthy=healthy,
            base_url=settings.base_url,
            database="external (DATABASE_URL)" if settings.database_url else "embedded PostgreSQL",
            version=__version__,
            api_version=INSFORGE_API_VERSION,
        )
        return HTMLResponse(html, status_code=200 if healthy else 503)

    @staticmethod
    async def root(_request: Request) -> Response:
        return RedirectResponse("/dashboard", status_code=302)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.root, methods=["GET"]),
            Route("/dashboard", self.status_page, methods=["GET"]),
        ]


def capability(core: Core) -> Capability:
    return Capability("dashboard", DashboardRoutes(core).routes())
