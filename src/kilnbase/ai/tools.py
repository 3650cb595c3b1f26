"""The gateway's MCP tools: what an agent needs to wire an app to models (configurations, the catalog) and
to see what it costs (usage). Admin only."""

from __future__ import annotations

from typing import Any

from kilnbase.ai.admin import usage_summary
from kilnbase.ai.service import AiService
from kilnbase.capability import Tool
from kilnbase.http.errors import require_admin_actor
from kilnbase.identity.actor import Actor


def ai_tools(ai: AiService) -> list[Tool]:
    async def list_ai_configurations(actor: Actor) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        return await ai.admin(actor).list_configurations()

    async def list_models(actor: Actor) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        return await ai.gateway.models()

    async def get_ai_usage_summary(
        actor: Actor, startDate: str | None = None, endDate: str | None = None
    ) -> dict[str, Any]:
        require_admin_actor(actor)
        return await usage_summary(ai.database, start=startDate, end=endDate, config_id=None)

    return [
        Tool(
            "list-ai-configurations",
            "The AI configurations apps call (model, modality, prompt).",
            list_ai_configurations,
        ),
        Tool("list-models", "Models the gateway can reach, with their prices.", list_models),
        Tool(
            "get-ai-usage-summary",
            "Requests, tokens, cost and failures, by day, model, user and configuration.",
            get_ai_usage_summary,
        ),
    ]
