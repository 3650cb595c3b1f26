"""The dashboard's landing page: what this server is, whether it is healthy, and how to connect."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from kilnbase import INSFORGE_API_VERSION, __version__
from kilnbase.server.runtime import runtime_of

_templates = Environment(
    loader=PackageLoader("kilnbase.dashboard", "templates"), autoescape=select_autoescape()
)


async def status_page(request: Request) -> Response:
    runtime = runtime_of(request)
    try:
        await runtime.database.ping()
        healthy = True
    except Exception:
        healthy = False
    settings = runtime.settings
    html = _templates.get_template("status.html").render(
        healthy=healthy,
        base_url=settings.base_url,
        database="external (DATABASE_URL)"
        if settings.database_url
        else f"embedded PostgreSQL in {settings.data_dir}",
        version=__version__,
        api_version=INSFORGE_API_VERSION,
        data_dir=settings.data_dir,
    )
    return HTMLResponse(html, status_code=200 if healthy else 503)


async def root(_request: Request) -> Response:
    return RedirectResponse("/dashboard", status_code=302)


routes: list[BaseRoute] = [
    Route("/", root, methods=["GET"]),
    Route("/dashboard", status_page, methods=["GET"]),
]
