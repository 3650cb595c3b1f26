"""Every route of the model gateway: the OpenAI-compatible `/v1` surface and InsForge's `/api/ai`."""

from __future__ import annotations

from kilnbase.ai.admin_routes import AiAdminRoutes
from kilnbase.ai.insforge_routes import InsForgeAiRoutes
from kilnbase.ai.openai_routes import OpenAiRoutes
from kilnbase.ai.service import AiService
from kilnbase.ai.tools import ai_tools
from kilnbase.capability import Capability

#: The gateway's request bodies fall under the gateway's body limit (prompts with images run large).
GATEWAY_PATHS = ("/v1/", "/api/ai/chat/", "/api/ai/image/", "/api/ai/embeddings")


def capability(ai: AiService) -> Capability:
    return Capability(
        "ai",
        [*OpenAiRoutes(ai).routes(), *InsForgeAiRoutes(ai).routes(), *AiAdminRoutes(ai).routes()],
        lifespan=ai.running,
        tools=ai_tools(ai),
        body_limits=dict.fromkeys(GATEWAY_PATHS, "gateway"),
    )
