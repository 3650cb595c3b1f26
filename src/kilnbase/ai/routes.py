"""Every route of the model gateway: the OpenAI-compatible `/v1` surface and InsForge's `/api/ai`."""

from __future__ import annotations

from starlette.routing import BaseRoute

from kilnbase.ai import insforge_routes, openai_routes

routes: list[BaseRoute] = [*openai_routes.routes, *insforge_routes.routes]
