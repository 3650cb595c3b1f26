"""Validation of what clients send, and the policy rules applied to it before anything leaves the process:
system prompts from configurations, the model allow-list, the request-field allow-list, the token caps.
Pure functions, no I/O."""

from __future__ import annotations

from typing import Any

from kilnbase.ai.errors import GatewayError, invalid
from kilnbase.ai.policy import Configuration, model_matches

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_SYSTEM_ROLES = frozenset({"system", "developer"})
_RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
#: OpenAI's own limit on `n`.
MAX_CHOICES = 128

#: Chat fields any caller may send: OpenAI's, and OpenRouter's sampling extras. None of them changes which
#: provider serves a call or adds a charge that the reservation does not count (tokens are counted, and
#: every token budget is capped). Everything else (`plugins`: web search and file parsing billed per use;
#: `provider`, `route`, `transforms`: routing, price ceilings, data policy; `modalities`, `audio`: image and
#: audio output billed per item; `prediction`, `service_tier`, `web_search_options`, `store`, `metadata`,
#: unknown fields) is refused with a 400 naming it, unless the policy's `allowedRequestFields` lists it.
#: Refused rather than dropped: a caller asking for a web search must not silently get an answer without one.
STANDARD_CHAT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "models",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "top_a",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "seed",
        "stop",
        "user",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "structured_outputs",
        "reasoning",
        "reasoning_effort",
        "verbosity",
        "usage",
    }
)


def _one_of(value: Any, choices: frozenset[str]) -> bool:
    """`value` is one of `choices`: a string first, as a JSON list or object cannot be looked up in a set."""
    return isinstance(value, str) and value in choices


def _positive_int(body: dict[str, Any], name: str, path: str | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise invalid(f"'{path or name}' must be a positive integer.", param=path or name)
    return value


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip() or len(model) > 200:
        raise invalid("'model' is required: a model id such as 'openai/gpt-4o-mini'.", param="model")
    return model.strip()


def validate_chat(raw: Any) -> dict[str, Any]:
    """The request as a dict, checked field by field; raises a 400 naming the field."""
    if not isinstance(raw, dict):
        raise invalid("The request body must be a JSON object.")
    body: dict[str, Any] = dict(raw)
    body["model"] = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty array.", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not _one_of(message.get("role"), _ROLES):
            raise invalid(
                f"messages[{index}] must be an object with a role among {sorted(_ROLES)}.",
                param=f"messages[{index}]",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise invalid(
                f"messages[{index}].content must be a string or an array of parts.",
                param=f"messages[{index}].content",
            )
    _positive_int(body, "max_tokens")
    _positive_int(body, "max_completion_tokens")
    n = _positive_int(body, "n")
    if n is not None and n > MAX_CHOICES:
        raise invalid(f"'n' must be an integer from 1 to {MAX_CHOICES}.", param="n")
    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise invalid("'reasoning' must be an object.", param="reasoning")
        _positive_int(reasoning, "max_tokens", "reasoning.max_tokens")
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise invalid("'stream' must be a boolean.", param="stream")
    for name, low, high in (("temperature", 0, 2), ("top_p", 0, 1)):
        value = body.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high
        ):
            raise invalid(f"'{name}' must be a number between {low} and {high}.", param=name)
    if body.get("tools") is not None and not isinstance(body["tools"], list):
        raise invalid("'tools' must be an array.", param="tools")
    if body.get("tool_choice") is not None and not isinstance(body["tool_choice"], str | dict):
        raise invalid("'tool_choice' must be a string or an object.", param="tool_choice")
    response_format = body.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, dict) or not _one_of(response_format.get("type"), _RESPONSE_FORMATS)
    ):
        raise invalid(
            f"'response_format.type' must be one of {sorted(_RESPONSE_FORMATS)}.", param="response_format"
        )
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid("'stream_options' must be an object.", param="stream_options")
    models = body.get("models")
    if models is not None and (
        not isinstance(models, list) or len(models) > 10 or not all(isinstance(m, str) and m for m in models)
    ):
        raise invalid("'models' must be an array of at most 10 model ids.", param="models")
    return body


def validate_embeddings(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise invalid("The request body must be a JSON object.")
    body: dict[str, Any] = dict(raw)
    body["model"] = _model(body)
    value = body.get("input")
    ok = (isinstance(value, str) and value != "") or (
        isinstance(value, list)
        and value
        and (
            all(isinstance(v, str) for v in value)
            or all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value)
        )
    )
    if not ok:
        raise invalid(
            "'input' must be a non-empty string, array of strings, or array of token arrays.", param="input"
        )
    if isinstance(value, list) and len(value) > 2048:
        raise invalid("'input' may hold at most 2048 items.", param="input")
    if body.get("encoding_format", "float") not in ("float", "base64", None):
        raise invalid("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    _positive_int(body, "dimensions")
    return body


def validate_image(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise invalid("The request body must be a JSON object.")
    body: dict[str, Any] = dict(raw)
    body["model"] = _model(body)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > 32_000:
        raise invalid("'prompt' is required (at most 32000 characters).", param="prompt")
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 4):
        raise invalid("'n' must be an integer from 1 to 4.", param="n")
    if body.get("response_format", "b64_json") not in ("b64_json", "url", None):
        raise invalid("'response_format' must be 'b64_json' or 'url'.", param="response_format")
    return body


def apply_configuration(
    messages: list[dict[str, Any]], configuration: Configuration | None
) -> list[dict[str, Any]]:
    """The configured system prompt always comes first; client system messages follow it, are dropped, or
    are refused, as the configuration says. A client cannot remove or replace it."""
    if configuration is None:
        return messages
    has_client_system = any(m.get("role") in _SYSTEM_ROLES for m in messages)
    mode = configuration.client_system_messages
    if mode == "refuse" and has_client_system:
        raise GatewayError(
            400,
            f"The configuration of {configuration.model_id} does not accept system messages from clients.",
            code="system_message_not_allowed",
            param="messages",
        )
    if mode == "drop":
        messages = [m for m in messages if m.get("role") not in _SYSTEM_ROLES]
    if configuration.system_prompt:
        return [{"role": "system", "content": configuration.system_prompt}, *messages]
    return messages


def check_allowed(models: list[str], patterns: tuple[str, ...] | None, who: str) -> None:
    if patterns is None:
        return
    for model in models:
        if not model_matches(model, patterns):
            raise GatewayError(
                403,
                f"Model {model} is not allowed for this {who}.",
                type_="permission_error",
                code="model_not_allowed",
                param="model",
            )


def check_fields(body: dict[str, Any], allowed: frozenset[str]) -> None:
    """Refuse (400, naming each) the fields that are neither standard nor allowed by the policy."""
    if STANDARD_CHAT_FIELDS.issuperset(body):
        return
    refused = sorted(body.keys() - STANDARD_CHAT_FIELDS - allowed)
    if not refused:
        return
    names = ", ".join(f"'{name}'" for name in refused)
    raise GatewayError(
        400,
        f"Request field {names} is not allowed by this project's gateway policy (such fields can add "
        "charges or change which provider serves the call). An admin can allow it with PUT "
        '/api/ai/policy {"allowedRequestFields": [...]}.',
        code="parameter_not_allowed",
        param=refused[0],
    )


#: The fields that set a token budget for each choice (OpenRouter's `reasoning.max_tokens` is checked too).
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")


def _check_budget(name: str, requested: int, choices: int, cap: int | None, model_limit: int | None) -> None:
    if cap is not None and requested * choices > cap:
        asked = f"{name} {requested}" + (f" for each of n={choices} choices" if choices > 1 else "")
        raise GatewayError(
            400,
            f"{asked} is above this project's cap of {cap} tokens a request.",
            code="max_tokens_exceeded",
            param=name,
        )
    if model_limit is not None and requested > model_limit:
        raise GatewayError(
            400,
            f"{name} {requested} is above the model's limit of {model_limit}.",
            code="max_tokens_exceeded",
            param=name,
        )


def cap_completion_tokens(
    body: dict[str, Any], project_cap: int | None, key_cap: int | None, model_limit: int | None
) -> int | None:
    """Check every token budget against the smaller cap, which bounds the whole request: `n` choices of
    `max_tokens` each are `n` times the budget (400 naming the field). Returns the largest budget asked for,
    per choice; when none was asked and a cap applies, the cap (shared among the choices) goes upstream."""
    choices = body.get("n") or 1
    cap = key_cap if project_cap is None else project_cap if key_cap is None else min(project_cap, key_cap)
    largest: int | None = None
    for name in TOKEN_FIELDS:
        requested = body.get(name)
        if requested:
            _check_budget(name, requested, choices, cap, model_limit)
            largest = requested if largest is None else max(largest, requested)
    reasoning = body.get("reasoning")
    if reasoning and reasoning.get("max_tokens"):
        requested = reasoning["max_tokens"]
        _check_budget("reasoning.max_tokens", requested, choices, cap, model_limit)
        largest = requested if largest is None else max(largest, requested)
    if largest is not None or cap is None:
        return largest
    if choices > cap:
        raise GatewayError(
            400, f"n={choices} choices is above this project's cap of {cap} tokens a request.", param="n"
        )
    body["max_tokens"] = cap // choices
    return cap // choices
