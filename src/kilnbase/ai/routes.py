"""Every route of the model gateway: the OpenAI-compatible `/v1` surface and InsForge's `/api/ai`."""

from __future__ import annotations

from kilnbase.ai import insforge_routes, openai_routes
from kilnbase.ai.service import AiService
from kilnbase.capability import Capability

#: The gateway's request bodies fall under the gateway's body limit (prompts with images run large).
GATEWAY_PATHS = ("/v1/", "/api/ai/chat/", "/api/ai/image/", "/api/ai/embeddings")


def capability(ai: AiService) -> Capability:
    return Capability(
        "ai",
        [*openai_routes.routes(ai), *insforge_routes.routes(ai)],
        lifespan=ai.running,
        body_limits=dict.fromkeys(GATEWAY_PATHS, "gateway"),
    )
