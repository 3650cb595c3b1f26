"""Every route of the model gateway: the OpenAI-compatible `/v1` surface and InsForge's `/api/ai`."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from kilnbase.ai import insforge_routes, openai_routes
from kilnbase.ai.gateway import Gateway
from kilnbase.ai.gateway_factory import build_gateway, close_gateway
from kilnbase.server.runtime import Runtime

routes: list[BaseRoute] = [*openai_routes.routes, *insforge_routes.routes]


def startup(app: Starlette, runtime: Runtime) -> None:
    """Make the gateway in the lifespan, before the startup heap is frozen out of the GC's reach."""
    app.state.ai_gateway = build_gateway(runtime.settings, runtime.secret_box, lambda: runtime.database)


async def shutdown(app: Starlette) -> None:
    """Write the usage rows still queued and close the upstream connections. Call it in the lifespan's
    shutdown, before the database pool closes, so that no ledger row is lost on a graceful stop."""
    gateway: Gateway | None = getattr(app.state, "ai_gateway", None)
    if gateway is not None:
        await close_gateway(gateway)
