"""InsForge's `/api/ai` calls (chat, images, embeddings, models), so `@insforge/sdk`'s `ai` module works
unchanged. Errors take InsForge's shape.

InsForge's chat stream is its own SSE dialect: `{"chunk": text}` per delta, then `{"tokenUsage": ...}`,
`{"tool_calls": [...]}` (accumulated by index), and `{"done": true}`; a failure midway is
`{"error": true, "message": ...}`. There is no `[DONE]`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.ai.chat_stream import ChatStream
from kilnbase.ai.edge import api_caller_of, cache_mode, insforge_errors, json_body
from kilnbase.ai.errors import invalid
from kilnbase.ai.event_stream import EventStreamResponse
from kilnbase.ai.providers import StreamBroken
from kilnbase.ai.service import AiService
from kilnbase.http.admin_gate import require_admin
from kilnbase.http.disconnect import unless_client_leaves
from kilnbase.http.responses import json_response


def _usage(usage: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return {"promptTokens": prompt, "completionTokens": completion, "totalTokens": prompt + completion}


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


def _per_million(value: Any) -> float | None:
    try:
        return round(float(value) * 1_000_000, 6) if value is not None else None
    except (TypeError, ValueError):
        return None


class InsForgeAiRoutes:
    def __init__(self, ai: AiService) -> None:
        self.ai = ai

    @insforge_errors
    async def chat_completion(self, request: Request) -> Response:
        gateway = self.ai.gateway
        caller = await api_caller_of(self.ai, request)
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
        return json_response(answer, headers=result.headers)

    @insforge_errors
    async def image_generation(self, request: Request) -> Response:
        gateway = self.ai.gateway
        caller = await api_caller_of(self.ai, request)
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
        return json_response(answer)

    @insforge_errors
    async def embeddings(self, request: Request) -> Response:
        gateway = self.ai.gateway
        caller = await api_caller_of(self.ai, request)
        result = await gateway.embeddings(
            caller, await json_body(request), endpoint="/api/ai/embeddings", cache_mode=cache_mode(request)
        )
        usage = result.body["usage"]
        return json_response(
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

    @insforge_errors
    async def models(self, request: Request) -> Response:
        require_admin(request)
        found = await self.ai.gateway.models()
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
        return json_response(out)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/ai/chat/completion", self.chat_completion, methods=["POST"]),
            Route("/api/ai/image/generation", self.image_generation, methods=["POST"]),
            Route("/api/ai/embeddings", self.embeddings, methods=["POST"]),
            Route("/api/ai/models", self.models, methods=["GET"]),
        ]
