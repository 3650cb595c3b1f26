"""The OpenAI-compatible surface under `/v1`: the `openai` SDKs work unchanged with `base_url=.../v1`.

Errors take OpenAI's shape `{error: {message, type, param, code}}`; streams are OpenAI's chunks, a usage chunk
with `choices: []` only when `stream_options.include_usage` asked for it, and `data: [DONE]`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from kilnbase.ai.chat_stream import ChatStream
from kilnbase.ai.edge import cache_mode, caller_of, json_body
from kilnbase.ai.errors import GatewayError, openai_error_body
from kilnbase.ai.event_stream import EventStreamResponse
from kilnbase.ai.providers import StreamBroken
from kilnbase.ai.service import AiService
from kilnbase.http.disconnect import unless_client_leaves

DONE = b"data: [DONE]\n\n"


def _json(body: object, headers: dict[str, str] | None = None, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _openai_errors(
    handler: Callable[[AiService, Request], Awaitable[Response]],
) -> Callable[[AiService, Request], Awaitable[Response]]:
    async def wrapped(ai: AiService, request: Request) -> Response:
        try:
            return await handler(ai, request)
        except GatewayError as exc:
            return _json(openai_error_body(exc), exc.headers, exc.status)

    return wrapped


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


async def _send_json(send: Send, body: object, status: int, headers: Mapping[str, str] | None = None) -> None:
    payload = orjson.dumps(body) if body is not None else b""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    raw.append((b"content-length", str(len(payload)).encode()))
    if body is not None:
        raw.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


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
            await _send_json(send, openai_error_body(exc), exc.status, exc.headers)
            return
        if events is not None:
            await events(scope, receive, send)
        elif result is None:
            await _send_json(send, None, 499)  # nobody is listening any more
        else:
            await _send_json(send, result.body, 200, result.headers)


@_openai_errors
async def embeddings(ai: AiService, request: Request) -> Response:
    gateway = ai.gateway
    caller = await caller_of(ai, request)
    result = await gateway.embeddings(caller, await json_body(request), cache_mode=cache_mode(request))
    return _json(result.body, result.headers)


@_openai_errors
async def images(ai: AiService, request: Request) -> Response:
    gateway = ai.gateway
    caller = await caller_of(ai, request)
    body = await json_body(request)
    urls, _text, usage, _model = await gateway.images(caller, body)
    as_url = isinstance(body, dict) and body.get("response_format") == "url"
    data = [{"url": url} if as_url else {"b64_json": url.split(",", 1)[-1]} for url in urls]
    return _json(
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


def _model_entry(model: dict[str, object]) -> dict[str, object]:
    model_id = str(model["id"])
    created = model.get("created")
    return {
        "id": model_id,
        "object": "model",
        "created": created if isinstance(created, int) else 0,
        "owned_by": model_id.split("/", 1)[0] if "/" in model_id else "kilnbase",
    }


@_openai_errors
async def list_models(ai: AiService, request: Request) -> Response:
    await caller_of(ai, request)
    models = await ai.gateway.models()
    return _json({"object": "list", "data": [_model_entry(m) for m in models]})


@_openai_errors
async def get_model(ai: AiService, request: Request) -> Response:
    await caller_of(ai, request)
    model_id = request.path_params["model_id"]
    for model in await ai.gateway.models():
        if model["id"] == model_id:
            return _json(_model_entry(model))
    raise GatewayError(
        404,
        f"The model '{model_id}' does not exist.",
        type_="invalid_request_error",
        code="model_not_found",
        param="model",
    )


def routes(ai: AiService) -> list[BaseRoute]:
    return [
        Route("/v1/chat/completions", ChatCompletions(ai), methods=["POST"]),
        Route("/v1/embeddings", partial(embeddings, ai), methods=["POST"]),
        Route("/v1/images/generations", partial(images, ai), methods=["POST"]),
        Route("/v1/models", partial(list_models, ai), methods=["GET"]),
        Route("/v1/models/{model_id:path}", partial(get_model, ai), methods=["GET"]),
    ]
