"""The OpenAI-compatible surface under `/v1`: the `openai` SDKs work unchanged with `base_url=.../v1`.

Errors take OpenAI's shape `{error: {message, type, param, code}}`; streams are OpenAI's chunks, a usage chunk
with `choices: []` only when `stream_options.include_usage` asked for it, and `data: [DONE]`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from kilnbase.ai.chat_stream import ChatStream
from kilnbase.ai.edge import cache_mode, caller_of, json_body, openai_errors
from kilnbase.ai.errors import GatewayError, openai_error_body
from kilnbase.ai.event_stream import EventStreamResponse
from kilnbase.ai.providers import StreamBroken
from kilnbase.ai.service import AiService
from kilnbase.http.disconnect import unless_client_leaves
from kilnbase.http.responses import json_response, send_body, send_json

DONE = b"data: [DONE]\n\n"


async def _openai_events(stream: ChatStream) -> AsyncIterator[bytes]:
    include_usage = stream.include_usage
    try:
        async for chunk in stream.chunks():
            if chunk is None:
                yield b": keepalive\n\n"
                continue
            if include_usage:
                chunk["usage"] = None
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        if include_usage:
            yield b"data: " + orjson.dumps(stream.usage_chunk()) + b"\n\n"
    except StreamBroken as exc:
        error = {
            "error": {"message": exc.message, "type": "api_error", "param": None, "code": "upstream_error"}
        }
        yield b"data: " + orjson.dumps(error) + b"\n\n"
    finally:
        await stream.close()
    yield DONE


class ChatCompletions:
    """`POST /v1/chat/completions`, the gateway's hot path, as a plain ASGI app: no per-request handler
    wrapper or Response object; the answer goes out as the bytes orjson made."""

    def __init__(self, ai: AiService) -> None:
        self.ai = ai

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        ai = self.ai
        try:
            gateway = ai.gateway
            caller = await caller_of(ai, request)
            body = await json_body(request)
            if isinstance(body, dict) and body.get("stream"):
                stream = await gateway.open_chat_stream(caller, body)
                events = EventStreamResponse(
                    _openai_events(stream), keepalive=gateway.settings.ai_stream_keepalive
                )
            else:
                events = None
                result = await unless_client_leaves(
                    receive, gateway.chat(caller, body, cache_mode=cache_mode(request))
                )
        except GatewayError as exc:
            await send_json(send, exc.status, openai_error_body(exc), exc.headers)
            return
        if events is not None:
            await events(scope, receive, send)
        elif result is None:
            await send_body(send, 499, [], b"")  # nobody is listening any more
        else:
            await send_json(send, 200, result.body, result.headers)


def _model_entry(model: dict[str, object]) -> dict[str, object]:
    model_id = str(model["id"])
    created = model.get("created")
    return {
        "id": model_id,
        "object": "model",
        "created": created if isinstance(created, int) else 0,
        "owned_by": model_id.split("/", 1)[0] if "/" in model_id else "kilnbase",
    }


class OpenAiRoutes:
    def __init__(self, ai: AiService) -> None:
        self.ai = ai

    @openai_errors
    async def embeddings(self, request: Request) -> Response:
        gateway = self.ai.gateway
        caller = await caller_of(self.ai, request)
        result = await gateway.embeddings(caller, await json_body(request), cache_mode=cache_mode(request))
        return json_response(result.body, headers=result.headers)

    @openai_errors
    async def images(self, request: Request) -> Response:
        gateway = self.ai.gateway
        caller = await caller_of(self.ai, request)
        body = await json_body(request)
        urls, _text, usage, _model = await gateway.images(caller, body)
        as_url = isinstance(body, dict) and body.get("response_format") == "url"
        data = [{"url": url} if as_url else {"b64_json": url.split(",", 1)[-1]} for url in urls]
        return json_response(
            {
                "created": int(time.time()),
                "data": data,
                "usage": {
                    "input_tokens": usage["prompt_tokens"],
                    "output_tokens": usage["completion_tokens"],
                    "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
                    "input_tokens_details": {"text_tokens": usage["prompt_tokens"], "image_tokens": 0},
                },
            }
        )

    @openai_errors
    async def list_models(self, request: Request) -> Response:
        models = await self.ai.gateway.models_for(await caller_of(self.ai, request))
        return json_response({"object": "list", "data": [_model_entry(m) for m in models]})

    @openai_errors
    async def get_model(self, request: Request) -> Response:
        model_id = request.path_params["model_id"]
        for model in await self.ai.gateway.models_for(await caller_of(self.ai, request)):
            if model["id"] == model_id:
                return json_response(_model_entry(model))
        raise GatewayError(
            404,
            f"The model '{model_id}' does not exist.",
            type_="invalid_request_error",
            code="model_not_found",
            param="model",
        )

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/chat/completions", ChatCompletions(self.ai), methods=["POST"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/v1/images/generations", self.images, methods=["POST"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", self.get_model, methods=["GET"]),
        ]
