"""The gateway's MCP tools: what an agent needs to wire an app to models (configurations, the catalog),
to hand an app a gateway key with limits, and to see what it costs (usage). Admin only; each change goes
through the gateway's `Admin`, which audits it. Bodies are checked by the same models as `/api/ai`."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field

from kilnbase.ai import admin_requests
from kilnbase.ai.admin import usage_summary
from kilnbase.ai.admin_routes import check_scope
from kilnbase.ai.errors import GatewayError, insforge_code, insforge_next_actions
from kilnbase.ai.service import AiService
from kilnbase.capability import Tool
from kilnbase.http.errors import ApiError, require_admin_actor
from kilnbase.http.json_body import parse
from kilnbase.http.query_params import checked_timestamp
from kilnbase.identity.actor import Actor

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

ConfigId = Annotated[str, Field(description="The configuration's id", min_length=1, max_length=36)]
ModelId = Annotated[str, Field(description="e.g. openai/gpt-4o-mini", min_length=1, max_length=200)]
Modalities = Annotated[
    list[admin_requests.Modality] | None, Field(min_length=1, max_length=5, description="Default: text")
]
SystemPrompt = Annotated[str | None, Field(max_length=100_000)]
Fallbacks = Annotated[list[ModelId] | None, Field(max_length=10, description="Models tried in order")]
Count = admin_requests.Count | None
SmallCount = admin_requests.SmallCount | None
Usd = Annotated[float | None, Field(ge=0)]
DateArgument = Annotated[
    str | None, Field(description="ISO 8601 date or timestamp, e.g. 2026-04-18 or 2026-04-18T09:15:00Z")
]


async def _gateway(call: Awaitable[T]) -> T:
    """The admin call, its gateway error in the API's words."""
    try:
        return await call
    except GatewayError as exc:
        raise _api_error(exc) from None


def _api_error(exc: GatewayError) -> ApiError:
    return ApiError(exc.status, insforge_code(exc), exc.message, insforge_next_actions(exc))


def _model(model: type[M], **fields: Any) -> M:
    """The fields that were given, checked as the HTTP body would be (400 listing what is wrong)."""
    return parse(model, {name: value for name, value in fields.items() if value is not None})


def _limits(
    rpm: int | None, tpm: int | None, tokens_per_day: int | None, usd_per_day: Any, usd_per_month: Any
) -> admin_requests.Limits:
    """The limit fields a key or a scope takes, checked by the same model as `/api/ai`."""
    return _model(
        admin_requests.Limits,
        rpm=rpm,
        tpm=tpm,
        tokensPerDay=tokens_per_day,
        usdPerDay=usd_per_day,
        usdPerMonth=usd_per_month,
    )


def ai_tools(ai: AiService) -> list[Tool]:
    async def list_ai_configurations(actor: Actor) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        return await ai.admin(actor).list_configurations()

    async def list_models(actor: Actor) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        return await _gateway(ai.gateway.models())

    async def get_ai_usage_summary(
        actor: Actor, startDate: DateArgument = None, endDate: DateArgument = None
    ) -> dict[str, Any]:
        require_admin_actor(actor)
        start = checked_timestamp("startDate", startDate)
        end = checked_timestamp("endDate", endDate)
        return await usage_summary(ai.database, start=start, end=end, config_id=None)

    async def create_ai_configuration(
        actor: Actor,
        modelId: ModelId,
        provider: Annotated[str, Field(min_length=1, max_length=100)] = "openrouter",
        inputModality: Modalities = None,
        outputModality: Modalities = None,
        systemPrompt: SystemPrompt = None,
        clientSystemMessages: admin_requests.ClientSystemMessages | None = None,
        fallbackModels: Fallbacks = None,
    ) -> dict[str, Any]:
        require_admin_actor(actor)
        body = _model(
            admin_requests.ConfigurationCreate,
            modelId=modelId,
            provider=provider,
            inputModality=inputModality,
            outputModality=outputModality,
            systemPrompt=systemPrompt,
            clientSystemMessages=clientSystemMessages,
            fallbackModels=fallbackModels,
        )
        return await _gateway(ai.admin(actor).create_configuration(body.columns()))

    async def update_ai_configuration(
        actor: Actor,
        id: ConfigId,
        systemPrompt: SystemPrompt = None,
        clientSystemMessages: admin_requests.ClientSystemMessages | None = None,
        fallbackModels: Fallbacks = None,
    ) -> dict[str, Any]:
        require_admin_actor(actor)
        body = _model(
            admin_requests.ConfigurationUpdate,
            systemPrompt=systemPrompt,
            clientSystemMessages=clientSystemMessages,
            fallbackModels=fallbackModels,
        )
        await _gateway(ai.admin(actor).update_configuration(id, body.columns()))
        return {"message": "AI configuration updated successfully"}

    async def delete_ai_configuration(actor: Actor, id: ConfigId) -> dict[str, Any]:
        require_admin_actor(actor)
        await _gateway(ai.admin(actor).delete_configuration(id))
        return {"message": "AI configuration deleted successfully"}

    async def list_gateway_keys(actor: Actor) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        return await ai.admin(actor).list_keys()

    async def create_gateway_key(
        actor: Actor,
        name: Annotated[str, Field(min_length=1, max_length=100)],
        models: Annotated[
            list[ModelId] | None, Field(max_length=500, description="Models it may call (default: all)")
        ] = None,
        maxTokens: admin_requests.MaxTokens | None = None,
        rpm: SmallCount = None,
        tpm: Count = None,
        tokensPerDay: Count = None,
        usdPerDay: Usd = None,
        usdPerMonth: Usd = None,
    ) -> dict[str, Any]:
        require_admin_actor(actor)
        limits = _limits(rpm, tpm, tokensPerDay, usdPerDay, usdPerMonth)
        key = _model(admin_requests.KeyCreate, name=name, models=models, maxTokens=maxTokens)
        created = await _gateway(
            ai.admin(actor).create_key(key.name, key.models, key.maxTokens, limits.columns())
        )
        # Named apiKey here so that the tool call's audit entry masks it; it is shown only this once.
        return {k: v for k, v in created.items() if k != "key"} | {"apiKey": created["key"]}

    async def revoke_gateway_key(
        actor: Actor, id: Annotated[str, Field(min_length=1, max_length=36)]
    ) -> dict[str, Any]:
        require_admin_actor(actor)
        await _gateway(ai.admin(actor).revoke_key(id))
        return {"message": "Gateway key revoked"}

    async def get_ai_limits(actor: Actor) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        return await ai.admin(actor).list_limits()

    async def put_ai_limits(
        actor: Actor,
        scope: Literal["project", "key", "user", "agent", "anon"],
        subject: Annotated[
            str,
            Field(
                description="* for the project (or each user/agent/anon caller), else a gateway key id, "
                "user id, agent key id or client address",
                min_length=1,
                max_length=200,
            ),
        ],
        rpm: SmallCount = None,
        tpm: Count = None,
        tokensPerDay: Count = None,
        usdPerDay: Usd = None,
        usdPerMonth: Usd = None,
    ) -> dict[str, Any]:
        require_admin_actor(actor)
        limits = _limits(rpm, tpm, tokensPerDay, usdPerDay, usdPerMonth)
        try:
            check_scope(scope, subject)
        except GatewayError as exc:
            raise _api_error(exc) from None
        return await _gateway(ai.admin(actor).put_limits(scope, subject, limits.columns()))

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
        Tool(
            "create-ai-configuration",
            "Let apps call a model (modalities, system prompt, fallbacks).",
            create_ai_configuration,
            False,
        ),
        Tool(
            "update-ai-configuration",
            "Change a configuration's system prompt, client system messages or fallbacks.",
            update_ai_configuration,
            False,
        ),
        Tool(
            "delete-ai-configuration",
            "Remove a configuration: apps can no longer call its model.",
            delete_ai_configuration,
            False,
        ),
        Tool(
            "list-gateway-keys",
            "Gateway keys (prefix, models, limits, revoked), never the keys themselves.",
            list_gateway_keys,
        ),
        Tool(
            "create-gateway-key",
            "A new gateway key for an app, with its models and limits (the key is shown once).",
            create_gateway_key,
            False,
        ),
        Tool(
            "revoke-gateway-key",
            "Revoke a gateway key: its calls are refused at once.",
            revoke_gateway_key,
            False,
        ),
        Tool("get-ai-limits", "The gateway's rate and spend limits, by scope and subject.", get_ai_limits),
        Tool(
            "put-ai-limits",
            "Set the rate and spend limits of a scope and subject (absent: no such limit). An agent key may "
            "only lower limits.",
            put_ai_limits,
            False,
        ),
    ]
