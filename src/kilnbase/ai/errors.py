"""One error type for the whole gateway; each surface renders it in its own shape (OpenAI's or InsForge's).

Messages are written for the caller and never contain a key: upstream bodies are reduced to their message.
"""

from __future__ import annotations

from collections.abc import Mapping


class GatewayError(Exception):
    """A failure with the HTTP status, OpenAI `type` and `code` it must be reported with."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = dict(headers or {})


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def openai_error_body(error: GatewayError) -> dict[str, object]:
    return {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}


#: InsForge's error codes for the gateway's statuses (its `{error, message, statusCode}` shape).
_INSFORGE_CODES = {
    400: "INVALID_INPUT",
    401: "AUTH_UNAUTHORIZED",
    402: "AI_QUOTA_EXCEEDED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    429: "RATE_LIMITED",
    502: "AI_UPSTREAM_UNAVAILABLE",
    503: "AI_UPSTREAM_UNAVAILABLE",
}


def insforge_code(error: GatewayError) -> str:
    if error.code == "no_provider_key":
        return "AI_INVALID_API_KEY"
    return _INSFORGE_CODES.get(error.status, "INTERNAL_ERROR" if error.status >= 500 else "INVALID_INPUT")


_LIMITS = "an admin can raise the limit with PUT /api/ai/limits/{scope}/{subject}."
_RETRY = (
    "Retry shortly; if it persists, check the provider and Gateway Credentials (GET /api/ai/gateway/config)."
)
#: InsForge's `nextActions` for the gateway's errors: by code (the message often says more), else by status.
_NEXT_BY_CODE = {
    "already_exists": "Change the existing configuration with PATCH /api/ai/configurations/{id} instead.",
    "not_found": "List what exists with the matching GET: /api/ai/configurations, /api/ai/gateway/keys, "
    "/api/ai/limits, /api/ai/providers or /api/ai/prices.",
    "invalid_api_key": "Check the key with its provider, then save it again.",
    "model_not_found": "Use a model id from GET /api/ai/models.",
    "model_not_supported": "Use a model that makes images (GET /api/ai/models lists the models).",
    "model_not_allowed": "Use an allowed model; an admin sets them in the policy (allowedModels, PUT "
    "/api/ai/policy) and on the gateway key (models).",
    "parameter_not_allowed": "Leave the field out, or an admin allows it with PUT /api/ai/policy "
    '{"allowedRequestFields": [...]}.',
    "system_message_not_allowed": "Leave out the system messages: the configuration sets the system prompt.",
    "max_tokens_exceeded": "Ask for fewer tokens, or fewer choices (n).",
    "anon_not_allowed": "Call with a signed-in user's token, the API key or a gateway key; an admin can "
    "admit anon callers with PUT /api/ai/policy.",
    "rate_limit_exceeded": f"Retry after the Retry-After seconds; {_LIMITS}",
    "quota_exceeded": f"Wait for the limit's period to end; {_LIMITS}",
    "spend_limit_exceeded": f"Wait for the limit's period to end; {_LIMITS}",
    "model_price_unknown": "An admin sets the model's price with PUT /api/ai/prices/{model}.",
    "no_provider_key": "Set an OpenRouter key with POST /api/ai/gateway/config, or OPENROUTER_API_KEY in the "
    "server's environment.",
    "upstream_insufficient_credits": "Add credits with the provider, or set another key under Gateway "
    "Credentials (POST /api/ai/gateway/config).",
    "upstream_rate_limited": "Retry later (after the Retry-After seconds, when given), or use another model.",
    "agent_cannot_mint_keys": "Ask a person with admin rights (the project's API key) to create the key; an "
    "agent calls the gateway (/v1) with its own key, within its model budget (agent limits).",
    "agent_cannot_raise_limits": "Ask a person with admin rights (the project's API key) to raise or remove "
    "it; an agent may lower limits (PUT /api/ai/limits/{scope}/{subject}, keeping every current limit at or "
    "below its value).",
    "agent_money_control": "Ask a person with admin rights (the project's API key) to make this change; an "
    "agent may lower limits (PUT /api/ai/limits/{scope}/{subject}) but not change what they count.",
    "limits_unavailable": "Retry shortly; the server's Redis (KILNBASE_AI_REDIS_URL or REDIS_URL) must be "
    "reachable.",
}
_NEXT_BY_STATUS = {
    400: "Fix what the message names and send the request again.",
    401: "Send a live gateway key, the project's API key or a signed-in user's token as the bearer.",
    403: "Call with a credential that is allowed this; the message says what is refused.",
}


def insforge_next_actions(error: GatewayError) -> str:
    """What the caller can do about `error`, for InsForge's shape (OpenAI's has no such field)."""
    if error.status != 401 and error.code in _NEXT_BY_CODE:
        return _NEXT_BY_CODE[error.code]
    return _NEXT_BY_STATUS.get(error.status, _RETRY if error.status >= 500 else _NEXT_BY_STATUS[400])
