"""InsForge's `/api/ai` surface (so `@insforge/sdk`'s `ai` module works unchanged), plus Kilnbase's
administration of the gateway: keys, limits, policy, providers, prices. Errors take InsForge's shape; admin
bodies are parsed by the models of `admin_requests.py`.

InsForge's chat stream is its own SSE dialect: `{"chunk": text}` per delta, then `{"tokenUsage": ...}`,
`{"tool_calls": [...]}` (accumulated by index), and `{"done": true}`; a failure midway is
`{"error": true, "message": ...}`. There is no `[DONE]`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.ai import admin_requests, credentials
from kilnbase.ai.admin import Admin, usage_records, usage_summary
from kilnbase.ai.chat_stream import ChatStream
from kilnbase.ai.edge import cache_mode, caller_of, json_body
from kilnbase.ai.errors import GatewayError, insforge_code, invalid
from kilnbase.ai.event_stream import EventStreamResponse
from kilnbase.ai.providers import StreamBroken
from kilnbase.ai.service import AiService
from kilnbase.http.disconnect import unless_client_leaves
from kilnbase.http.errors import error_response
from kilnbase.http.json_body import parse
from kilnbase.http.request_context import admin_actor, require_admin

Handler = Callable[[AiService, Request], Awaitable[Response]]


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _insforge_errors(handler: Handler) -> Handler:
    async def wrapped(ai: AiService, request: Request) -> Response:
        try:
            return await handler(ai, request)
        except GatewayError as exc:
            return error_response(exc.status, insforge_code(exc), exc.message, headers=exc.headers)

    return wrapped


def _admin(ai: AiService, request: Request) -> Admin:
    return ai.admin(admin_actor(request))


def _usage(usage: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return {"promptTokens": prompt, "completionTokens": completion, "totalTokens": prompt + completion}


# -- chat, images, embeddings -------------------------------------------------------------------------------
def _chat_request(body: Any) -> dict[str, Any]:
    """InsForge's request shape, translated to OpenAI's (legacy `images` become content parts)."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    messages = body.get("messages")
    translated: Any = messages
    if isinstance(messages, list):
        translated = []
        for message in messages:
            if isinstance(message, dict) and isinstance(message.get("images"), list) and message["images"]:
                parts: list[dict[str, Any]] = []
                if isinstance(message.get("content"), str):
                    parts.append({"type": "text", "text": message["content"]})
                parts.extend(
                    {"type": "image_url", "image_url": {"url": i.get("url")}}
                    for i in message["images"]
                    if isinstance(i, dict)
                )
                message = {k: v for k, v in message.items() if k != "images"} | {"content": parts}
            translated.append(message)
    model = body.get("model")
    if body.get("thinking") and isinstance(model, str) and not model.endswith(":thinking"):
        model = model + ":thinking"
    out: dict[str, Any] = {"model": model, "messages": translated}
    for source, target in (
        ("temperature", "temperature"),
        ("topP", "top_p"),
        ("maxTokens", "max_tokens"),
        ("tools", "tools"),
        ("toolChoice", "tool_choice"),
        ("parallelToolCalls", "parallel_tool_calls"),
        ("stream", "stream"),
    ):
        if body.get(source) is not None:
            out[target] = body[source]
    plugins: list[dict[str, Any]] = []
    web = body.get("webSearch")
    if isinstance(web, dict) and web.get("enabled"):
        plugin = {
            "id": "web",
            "engine": web.get("engine"),
            "max_results": web.get("maxResults"),
            "search_prompt": web.get("searchPrompt"),
        }
        plugins.append({k: v for k, v in plugin.items() if v is not None})
    parser = body.get("fileParser")
    if isinstance(parser, dict) and parser.get("enabled"):
        plugins.append(
            {"id": "file-parser", **({"pdf": parser["pdf"]} if isinstance(parser.get("pdf"), dict) else {})}
        )
    if plugins:
        out["plugins"] = plugins
    return out


async def _insforge_events(stream: ChatStream) -> AsyncIterator[bytes]:
    def event(payload: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    calls: dict[int, dict[str, Any]] = {}
    try:
        async for chunk in stream.chunks():
            if chunk is None:
                yield b": keepalive\n\n"
                continue
            for choice in chunk["choices"]:
                delta = choice["delta"]
                if delta.get("content"):
                    yield event({"chunk": delta["content"]})
                for fragment in delta.get("tool_calls") or []:
                    entry = calls.setdefault(
                        int(fragment.get("index", 0)),
                        {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                    )
                    entry["id"] = fragment.get("id") or entry["id"]
                    function = fragment.get("function") or {}
                    entry["function"]["name"] = function.get("name") or entry["function"]["name"]
                    entry["function"]["arguments"] += function.get("arguments") or ""
        if stream.usage:
            yield event({"tokenUsage": _usage(stream.usage)})
        if calls:
            yield event({"tool_calls": [calls[i] for i in sorted(calls)]})
        yield event({"done": True})
    except StreamBroken as exc:
        yield event({"error": True, "message": exc.message})
    finally:
        await stream.close()


@_insforge_errors
async def chat_completion(ai: AiService, request: Request) -> Response:
    gateway = ai.gateway
    caller = await caller_of(ai, request)
    body = _chat_request(await json_body(request))
    if body.get("stream"):
        stream = await gateway.open_chat_stream(caller, body, endpoint="/api/ai/chat/completion")
        return EventStreamResponse(
            _insforge_events(stream),
            headers={"connection": "keep-alive"},
            keepalive=gateway.settings.ai_stream_keepalive,
        )
    result = await unless_client_leaves(
        request.receive,
        gateway.chat(caller, body, endpoint="/api/ai/chat/completion", cache_mode=cache_mode(request)),
    )
    if result is None:
        return Response(status_code=499)  # nobody is listening any more
    message = result.body["choices"][0]["message"] if result.body["choices"] else {}
    answer: dict[str, Any] = {"text": message.get("content") or ""}
    if message.get("tool_calls"):
        answer["tool_calls"] = message["tool_calls"]
    if message.get("annotations"):
        answer["annotations"] = message["annotations"]
    answer["metadata"] = {"model": result.model, "usage": _usage(result.body["usage"])}
    return _json(answer, headers=result.headers)


@_insforge_errors
async def image_generation(ai: AiService, request: Request) -> Response:
    gateway = ai.gateway
    caller = await caller_of(ai, request)
    body = await json_body(request)
    inputs = body.get("images") if isinstance(body, dict) else None
    if inputs is not None and (
        not isinstance(inputs, list)
        or not all(isinstance(i, dict) and isinstance(i.get("url"), str) for i in inputs)
    ):
        raise invalid("'images' must be an array of {url}.", param="images")
    request_body = {k: v for k, v in body.items() if k != "images"} if isinstance(body, dict) else body
    urls, text, usage, model = await gateway.images(
        caller,
        request_body,
        endpoint="/api/ai/image/generation",
        input_images=[i["url"] for i in inputs or []],
    )
    answer: dict[str, Any] = {
        "images": [{"type": "imageUrl", "imageUrl": url} for url in urls],
        "metadata": {"model": model, "usage": _usage(usage)},
    }
    if text:
        answer["text"] = text
    return _json(answer)


@_insforge_errors
async def embeddings(ai: AiService, request: Request) -> Response:
    gateway = ai.gateway
    caller = await caller_of(ai, request)
    result = await gateway.embeddings(
        caller, await json_body(request), endpoint="/api/ai/embeddings", cache_mode=cache_mode(request)
    )
    usage = result.body["usage"]
    return _json(
        {
            "object": "list",
            "data": result.body["data"],
            "metadata": {
                "model": result.model,
                "usage": {"promptTokens": usage["prompt_tokens"], "totalTokens": usage["total_tokens"]},
            },
        },
        headers=result.headers,
    )


@_insforge_errors
async def models(ai: AiService, request: Request) -> Response:
    require_admin(request)
    found = await ai.gateway.models()
    out = []
    for model in found:
        architecture = model.get("architecture") or {}
        pricing = model.get("pricing") or {}
        out.append(
            {
                "id": model["id"],
                "modelId": model["id"],
                "provider": "openrouter",
                "name": model.get("name") or model["id"],
                "inputModality": architecture.get("input_modalities") or ["text"],
                "outputModality": architecture.get("output_modalities") or ["text"],
                "inputPrice": _per_million(pricing.get("prompt")),
                "outputPrice": _per_million(pricing.get("completion")),
                "contextLength": model.get("context_length"),
                "pricing": pricing,
            }
        )
    return _json(out)


def _per_million(value: Any) -> float | None:
    try:
        return round(float(value) * 1_000_000, 6) if value is not None else None
    except (TypeError, ValueError):
        return None


# -- configurations ------------------------------------------------------------------------------------------
_MODES = ("append", "drop", "refuse")


@_insforge_errors
async def list_configurations(ai: AiService, request: Request) -> Response:
    return _json(await _admin(ai, request).list_configurations())


@_insforge_errors
async def create_configuration(ai: AiService, request: Request) -> Response:
    admin = _admin(ai, request)
    body = parse(admin_requests.ConfigurationCreate, await json_body(request))
    return _json(await admin.create_configuration(body.columns()), 201)


@_insforge_errors
async def update_configuration(ai: AiService, request: Request) -> Response:
    admin = _admin(ai, request)
    body = parse(admin_requests.ConfigurationUpdate, await json_body(request))
    await admin.update_configuration(request.path_params["id"], body.columns())
    return _json({"message": "AI configuration updated successfully"})


@_insforge_errors
async def delete_configuration(ai: AiService, request: Request) -> Response:
    await _admin(ai, request).delete_configuration(request.path_params["id"])
    return _json({"message": "AI configuration deleted successfully"})


# -- usage ---------------------------------------------------------------------------------------------------
def _date(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if not value:
        return None
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"'{name}' must be an ISO 8601 date.", param=name) from None
    return value


def _int(request: Request, name: str, default: int, high: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    if not value.isdigit() or int(value) > high:
        raise invalid(f"'{name}' must be an integer from 0 to {high}.", param=name)
    return int(value)


@_insforge_errors
async def usage(ai: AiService, request: Request) -> Response:
    admin = _admin(ai, request)
    return _json(
        await usage_records(
            admin.db,
            limit=_int(request, "limit", 50, 1000),
            offset=_int(request, "offset", 0, 10**9),
            start=_date(request, "startDate"),
            end=_date(request, "endDate"),
        )
    )


@_insforge_errors
async def usage_summary_route(ai: AiService, request: Request) -> Response:
    admin = _admin(ai, request)
    return _json(
        await usage_summary(
            admin.db,
            start=_date(request, "startDate"),
            end=_date(request, "endDate"),
            config_id=request.query_params.get("configId"),
        )
    )


@_insforge_errors
async def usage_by_config(ai: AiService, request: Request) -> Response:
    admin = _admin(ai, request)
    result = await usage_records(
        admin.db,
        limit=_int(request, "limit", 1000, 1000),
        offset=_int(request, "offset", 0, 10**9),
        start=_date(request, "startDate"),
        end=_date(request, "endDate"),
        config_id=request.path_params["configId"],
    )
    return _json(result["records"])


# -- credentials ---------------------------------------------------------------------------------------------
@_insforge_errors
async def gateway_config(ai: AiService, request: Request) -> Response:
    return _json(await _admin(ai, request).credential_status())


@_insforge_errors
async def set_gateway_config(ai: AiService, request: Request) -> Response:
    admin = _admin(ai, request)
    body = parse(admin_requests.GatewayCredential, await json_body(request))
    await admin.set_credential(credentials.OPENROUTER_KEY, body.apiKey, validate=True)
    return _json(await admin.credential_status())


@_insforge_errors
async def delete_gateway_config(ai: AiService, request: Request) -> Response:
    admin = _admin(ai, request)
    await admin.delete_credential(credentials.OPENROUTER_KEY)
    return _json(await admin.credential_status())


@_insforge_errors
async def get_config(ai: AiService, request: Request) -> Response:
    return _json(await _admin(ai, request).insforge_config())


@_insforge_errors
async def put_config(ai: AiService, request: Request) -> Response:
    admin = _admin(ai, request)
    body = parse(admin_requests.InsforgeConfig, await json_body(request))
    if body.apiKey is not None:
        await admin.set_credential(credentials.OPENROUTER_KEY, body.apiKey, validate=True)
    if body.managementKey is not None:
        await admin.set_credential(credentials.MANAGEMENT_KEY, body.managementKey, validate=False)
    return _json(await admin.insforge_config())


# -- Kilnbase: gateway keys, limits, policy, providers -------------------------------------------------------
@_insforge_errors
async def list_keys(ai: AiService, request: Request) -> Response:
    return _json(await _admin(ai, request).list_keys())


@_insforge_errors
async def create_key(ai: AiService, request: Request) -> Response:
    admin = _admin(ai, request)
    body = parse(admin_requests.KeyCreate, await json_body(request))
    limits = (body.limits or admin_requests.Limits()).columns()
    return _json(await admin.create_key(body.name, body.models, body.maxTokens, limits), 201)


@_insforge_errors
async def revoke_key(ai: AiService, request: Request) -> Response:
    await _admin(ai, request).revoke_key(request.path_params["id"])
    return _json({"message": "Gateway key revoked"})


def _scope(request: Request) -> tuple[str, str]:
    """`project/*`; `key/<gateway key id>`; `user/<user id>` or `user/*` (each user); `anon/<address>` or
    `anon/*` (each client address calling with the anon key)."""
    scope, subject = request.path_params["scope"], request.path_params["subject"]
    if scope not in ("project", "key", "user", "anon"):
        raise invalid("The scope is one of project, key, user, anon.", param="scope")
    if scope == "project" and subject != "*":
        raise invalid("Project limits use the subject '*'.", param="subject")
    return scope, subject


@_insforge_errors
async def list_limits(ai: AiService, request: Request) -> Response:
    return _json(await _admin(ai, request).list_limits())


@_insforge_errors
async def put_limits(ai: AiService, request: Request) -> Response:
    admin = _admin(ai, request)
    scope, subject = _scope(request)
    body = parse(admin_requests.Limits, await json_body(request))
    return _json(await admin.put_limits(scope, subject, body.columns()))


@_insforge_errors
async def delete_limits(ai: AiService, request: Request) -> Response:
    admin = _admin(ai, request)
    await admin.delete_limits(*_scope(request))
    return _json({"message": "Limits removed"})


@_insforge_errors
async def get_policy(ai: AiService, request: Request) -> Response:
    return _json(await _admin(ai, request).get_policy())


@_insforge_errors
async def put_policy(ai: AiService, request: Request) -> Response:
    admin = _admin(ai, request)
    body = parse(admin_requests.PolicyUpdate, await json_body(request))
    return _json(await admin.put_policy(body.model_dump()))


@_insforge_errors
async def list_providers(ai: AiService, request: Request) -> Response:
    return _json(await _admin(ai, request).list_providers())


@_insforge_errors
async def put_provider(ai: AiService, request: Request) -> Response:
    admin = _admin(ai, request)
    body = parse(admin_requests.ProviderPut, await json_body(request))
    if request.path_params["name"] == "openrouter":
        raise invalid("'openrouter' is built in; set its key under /api/ai/gateway/config.", param="name")
    return _json(await admin.put_provider(request.path_params["name"], body.baseUrl, body.apiKey))


@_insforge_errors
async def delete_provider(ai: AiService, request: Request) -> Response:
    await _admin(ai, request).delete_provider(request.path_params["name"])
    return _json({"message": "Provider removed"})


@_insforge_errors
async def list_prices(ai: AiService, request: Request) -> Response:
    return _json(await _admin(ai, request).list_prices())


@_insforge_errors
async def put_price(ai: AiService, request: Request) -> Response:
    admin = _admin(ai, request)
    body = parse(admin_requests.PricePut, await json_body(request))
    return _json(await admin.put_price(request.path_params["model_id"], body.columns()))


@_insforge_errors
async def delete_price(ai: AiService, request: Request) -> Response:
    await _admin(ai, request).delete_price(request.path_params["model_id"])
    return _json({"message": "Price removed"})


def routes(ai: AiService) -> list[BaseRoute]:
    return [
        Route("/api/ai/chat/completion", partial(chat_completion, ai), methods=["POST"]),
        Route("/api/ai/image/generation", partial(image_generation, ai), methods=["POST"]),
        Route("/api/ai/embeddings", partial(embeddings, ai), methods=["POST"]),
        Route("/api/ai/models", partial(models, ai), methods=["GET"]),
        Route("/api/ai/configurations", partial(list_configurations, ai), methods=["GET"]),
        Route("/api/ai/configurations", partial(create_configuration, ai), methods=["POST"]),
        Route("/api/ai/configurations/{id}", partial(update_configuration, ai), methods=["PATCH"]),
        Route("/api/ai/configurations/{id}", partial(delete_configuration, ai), methods=["DELETE"]),
        Route("/api/ai/usage", partial(usage, ai), methods=["GET"]),
        Route("/api/ai/usage/summary", partial(usage_summary_route, ai), methods=["GET"]),
        Route("/api/ai/usage/config/{configId}", partial(usage_by_config, ai), methods=["GET"]),
        Route("/api/ai/gateway/config", partial(gateway_config, ai), methods=["GET"]),
        Route("/api/ai/gateway/config", partial(set_gateway_config, ai), methods=["POST"]),
        Route("/api/ai/gateway/config", partial(delete_gateway_config, ai), methods=["DELETE"]),
        Route("/api/ai/config", partial(get_config, ai), methods=["GET"]),
        Route("/api/ai/config", partial(put_config, ai), methods=["PUT"]),
        Route("/api/ai/gateway/keys", partial(list_keys, ai), methods=["GET"]),
        Route("/api/ai/gateway/keys", partial(create_key, ai), methods=["POST"]),
        Route("/api/ai/gateway/keys/{id}", partial(revoke_key, ai), methods=["DELETE"]),
        Route("/api/ai/limits", partial(list_limits, ai), methods=["GET"]),
        Route("/api/ai/limits/{scope}/{subject}", partial(put_limits, ai), methods=["PUT"]),
        Route("/api/ai/limits/{scope}/{subject}", partial(delete_limits, ai), methods=["DELETE"]),
        Route("/api/ai/policy", partial(get_policy, ai), methods=["GET"]),
        Route("/api/ai/policy", partial(put_policy, ai), methods=["PUT"]),
        Route("/api/ai/providers", partial(list_providers, ai), methods=["GET"]),
        Route("/api/ai/providers/{name}", partial(put_provider, ai), methods=["PUT"]),
        Route("/api/ai/providers/{name}", partial(delete_provider, ai), methods=["DELETE"]),
        Route("/api/ai/prices", partial(list_prices, ai), methods=["GET"]),
        Route("/api/ai/prices/{model_id:path}", partial(put_price, ai), methods=["PUT"]),
        Route("/api/ai/prices/{model_id:path}", partial(delete_price, ai), methods=["DELETE"]),
    ]
