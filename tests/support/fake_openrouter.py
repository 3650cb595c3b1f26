"""A scripted OpenRouter-compatible upstream: a real HTTP server (Starlette + uvicorn) on loopback.

It reproduces OpenRouter's wire format as the gateway meets it: a role-first chunk, content deltas, tool-call
fragments by index, `: OPENROUTER PROCESSING` comment lines, a final usage chunk whose `choices` is not empty
and which carries `usage.cost`, `data: [DONE]`; and its failures: 429 with `Retry-After`, 402 with
`metadata.limit_source`, 401, 502, an error frame at HTTP 200 in the middle of a stream, slow chunks,
malformed bytes. What each call does is scripted: `script(...)` queues behaviours for the next calls,
`script_model(model, ...)` for the next calls of one model, `rule(model, ...)` fixes a model's behaviour;
otherwise a call is answered with a deterministic reply. Embeddings are deterministic too, and texts that
share words get close vectors (`embedding`).

Run it on its own (for the benchmark) with `python -m tests.support.fake_openrouter --port N`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import math
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.servers import free_port

#: A 1x1 transparent PNG, what the fake "generates" for image requests.
PNG_1X1 = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
    )
).decode()

MODELS: list[dict[str, Any]] = [
    {
        "id": "openai/gpt-4o-mini",
        "name": "OpenAI: GPT-4o-mini",
        "created": 1721260800,
        "context_length": 128000,
        "architecture": {
            "modality": "text+image->text",
            "input_modalities": ["text", "image"],
            "output_modalities": ["text"],
        },
        "pricing": {"prompt": "0.00000015", "completion": "0.0000006", "request": "0", "image": "0"},
        "top_provider": {"context_length": 128000, "max_completion_tokens": 16384, "is_moderated": True},
        "supported_parameters": ["tools", "tool_choice", "response_format", "max_tokens"],
    },
    {
        "id": "anthropic/claude-3.5-haiku",
        "name": "Anthropic: Claude 3.5 Haiku",
        "created": 1730678400,
        "context_length": 200000,
        "architecture": {
            "modality": "text->text",
            "input_modalities": ["text"],
            "output_modalities": ["text"],
        },
        "pricing": {"prompt": "0.0000008", "completion": "0.000004", "request": "0", "image": "0"},
        "top_provider": {"context_length": 200000, "max_completion_tokens": 8192, "is_moderated": False},
        "supported_parameters": ["tools", "tool_choice", "max_tokens"],
    },
    {
        "id": "meta-llama/llama-3.3-8b-instruct:free",
        "name": "Meta: Llama 3.3 8B Instruct (free)",
        "created": 1746000000,
        "context_length": 128000,
        "architecture": {
            "modality": "text->text",
            "input_modalities": ["text"],
            "output_modalities": ["text"],
        },
        "pricing": {"prompt": "0", "completion": "0", "request": "0", "image": "0"},
        "top_provider": {"context_length": 128000, "max_completion_tokens": 4028, "is_moderated": False},
        "supported_parameters": ["max_tokens"],
    },
    {
        "id": "google/gemini-2.5-flash-image-preview",
        "name": "Google: Gemini 2.5 Flash Image",
        "created": 1756000000,
        "context_length": 32768,
        "architecture": {
            "modality": "text+image->text+image",
            "input_modalities": ["text", "image"],
            "output_modalities": ["text", "image"],
        },
        "pricing": {"prompt": "0.0000003", "completion": "0.0000025", "request": "0", "image": "0.001238"},
        "top_provider": {"context_length": 32768, "max_completion_tokens": 8192, "is_moderated": False},
        "supported_parameters": ["max_tokens"],
    },
    {
        "id": "openai/text-embedding-3-small",
        "name": "OpenAI: Text Embedding 3 Small",
        "created": 1705000000,
        "context_length": 8192,
        "architecture": {
            "modality": "text->embeddings",
            "input_modalities": ["text"],
            "output_modalities": ["embeddings"],
        },
        "pricing": {"prompt": "0.00000002", "completion": "0", "request": "0", "image": "0"},
        "top_provider": {"context_length": 8192, "max_completion_tokens": None, "is_moderated": False},
        "supported_parameters": [],
    },
]
_PRICES = {m["id"]: (Decimal(m["pricing"]["prompt"]), Decimal(m["pricing"]["completion"])) for m in MODELS}


@dataclass
class Reply:
    """A successful answer; streamed or not, as the request asks."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    served_model: str | None = None
    keepalives: int = 1
    chunk_delay: float = 0.0
    finish_reason: str | None = None
    #: Also send a partial usage figure early in the stream (cumulative usage: the last one is the total).
    interim_usage: bool = False


@dataclass
class Fail:
    """An HTTP error before any byte of the answer: 429, 402, 401, 502, ..."""

    status: int
    message: str = "Provider returned error"
    headers: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None


@dataclass
class MidStreamError:
    """HTTP 200, some content, then an error frame (OpenRouter's `finish_reason: error`)."""

    after_chunks: int = 2
    message: str = "Upstream provider disconnected"
    code: int = 502
    with_usage: bool = True


@dataclass
class Malformed:
    """HTTP 200 and bytes that are not a valid event stream (or, not streaming, not JSON)."""

    after_chunks: int = 1


Behaviour = Reply | Fail | MidStreamError | Malformed


def _reply_text(body: dict[str, Any]) -> str:
    model = body.get("model", "?")
    last = ""
    for message in body.get("messages") or []:
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            last = message["content"]
    return f"Hello from {model}: you said {last!r}."


_WORD = re.compile(r"[a-z0-9]{3,}")


def embedding(text: str, dims: int) -> list[float]:
    """A deterministic vector in which texts that share words are close, as a real model's would be: each
    word of three characters or more (lower-cased) adds one to a dimension its hash picks, with a sign its
    hash picks, and the vector is normalised, so the cosine similarity of two texts grows with the words they
    share. A text with no such word gets a vector from its hash, as unlike any other as chance makes it."""
    words = _WORD.findall(text.lower())
    if not words:
        digest = hashlib.sha256(text.encode()).digest()
        return [round((digest[i % 32] - 128) / 128, 6) for i in range(dims)]
    vector = [0.0] * dims
    for word in words:
        digest = hashlib.sha256(word.encode()).digest()
        vector[int.from_bytes(digest[:4], "big") % dims] += 1.0 if digest[4] % 2 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [round(v / norm, 6) for v in vector]


def _prompt_tokens(body: dict[str, Any]) -> int:
    return max(1, len(orjson.dumps(body.get("messages") or [])) // 4)


def _split(text: str, parts: int = 4) -> list[str]:
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


class FakeOpenRouter:
    """The server plus its script. `url` is the base URL the gateway needs (`.../api/v1`)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.valid_keys: set[str] = {"sk-or-v1-fake"}
        self.calls: list[dict[str, Any]] = []
        self.stream_outcomes: list[str] = []
        #: Off for the benchmark: a long run would keep every request in memory, and the garbage collector's
        #: passes over them would stall the server (the upstream must not be what is measured).
        self.record = True
        self.models_down = False
        #: What `GET /managed/key` hands out (a stand-in for InsForge Cloud's key service).
        self.managed_key: str | None = None
        self.managed_token = "cloud-token"
        self._queue: deque[Behaviour] = deque()
        self._model_queues: dict[str, deque[Behaviour]] = {}
        self._rules: dict[str, Behaviour] = {}
        self._lock = threading.Lock()
        self._sequence = 0
        self.app = Starlette(
            routes=[
                Route("/api/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/api/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/api/v1/models", self._models, methods=["GET"]),
                Route("/api/v1/key", self._key, methods=["GET"]),
                Route("/managed/key", self._managed_key, methods=["GET"]),
            ]
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    # -- scripting -------------------------------------------------------------------------------------------
    def script(self, *behaviours: Behaviour) -> None:
        """The next calls (any model) behave like these, in order."""
        with self._lock:
            self._queue.extend(behaviours)

    def script_model(self, model: str, *behaviours: Behaviour) -> None:
        """The next calls for `model` behave like these, in order (before its rule and the shared script)."""
        with self._lock:
            self._model_queues.setdefault(model, deque()).extend(behaviours)

    def rule(self, model: str, behaviour: Behaviour | None) -> None:
        """Every call for `model` behaves like this (None removes the rule)."""
        with self._lock:
            if behaviour is None:
                self._rules.pop(model, None)
            else:
                self._rules[model] = behaviour

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._model_queues.clear()
            self._rules.clear()
            self.calls.clear()
            self.stream_outcomes.clear()
            self.models_down = False

    def chat_calls(self) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["path"].endswith("/chat/completions")]

    def _record(self, call: dict[str, Any]) -> None:
        if self.record:
            self.calls.append(call)

    def _next(self, model: str) -> Behaviour:
        with self._lock:
            if self._model_queues.get(model):
                return self._model_queues[model].popleft()
            if model in self._rules:
                return self._rules[model]
            if self._queue:
                return self._queue.popleft()
        return Reply()

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> FakeOpenRouter:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-openrouter", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake OpenRouter did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    # -- endpoints ------------------------------------------------------------------------------------------
    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return header.startswith("Bearer ") and header[7:] in self.valid_keys

    @staticmethod
    def _error(
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Response:
        error: dict[str, Any] = {"code": status, "message": message}
        if metadata is not None:
            error["metadata"] = metadata
        return Response(
            orjson.dumps({"error": error}), status_code=status, media_type="application/json", headers=headers
        )

    async def _key(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._error(401, "User not found.")
        return Response(
            orjson.dumps(
                {"data": {"label": "sk-or-v1-...", "limit": None, "usage": 0, "is_free_tier": False}}
            ),
            media_type="application/json",
        )

    async def _managed_key(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.managed_token}":
            return self._error(401, "Unauthorized")
        if self.managed_key is None:
            return self._error(404, "No key for this project")
        return Response(orjson.dumps({"apiKey": self.managed_key}), media_type="application/json")

    async def _models(self, request: Request) -> Response:
        self._record({"path": request.url.path, "body": None, "authorization": None})
        if self.models_down:
            return self._error(503, "Service temporarily unavailable")
        if request.headers.get("authorization") and not self._authorized(request):
            return self._error(401, "Incorrect API key provided.")  # as OpenAI-style servers answer
        return Response(orjson.dumps({"data": MODELS}), media_type="application/json")

    async def _embeddings(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self._record(
            {"path": request.url.path, "body": body, "authorization": request.headers.get("authorization")}
        )
        if not self._authorized(request):
            return self._error(401, "User not found.")
        behaviour = self._next(body.get("model", ""))
        if isinstance(behaviour, Fail):
            return self._error(behaviour.status, behaviour.message, behaviour.headers, behaviour.metadata)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dims = int(body.get("dimensions") or 8)
        data = []
        tokens = 0
        for index, item in enumerate(inputs):
            data.append({"object": "embedding", "index": index, "embedding": embedding(str(item), dims)})
            tokens += max(1, len(str(item)) // 4)
        cost = float(Decimal(tokens) * _PRICES.get(body.get("model", ""), (Decimal(0), Decimal(0)))[0])
        return Response(
            orjson.dumps(
                {
                    "object": "list",
                    "data": data,
                    "model": body.get("model"),
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "cost": cost},
                }
            ),
            media_type="application/json",
        )

    async def _chat(self, request: Request) -> Response:
        raw = await request.body()
        body = orjson.loads(raw)
        self._record(
            {"path": request.url.path, "body": body, "authorization": request.headers.get("authorization")}
        )
        if not self._authorized(request):
            return self._error(401, "User not found.")
        behaviour = self._next(body.get("model", ""))
        if isinstance(behaviour, Fail):
            return self._error(behaviour.status, behaviour.message, behaviour.headers, behaviour.metadata)
        reply = behaviour if isinstance(behaviour, Reply) else Reply()
        with self._lock:
            self._sequence += 1
            generation = f"gen-{int(time.time())}-{self._sequence:06d}"
        model = reply.served_model or body.get("model", "openai/gpt-4o-mini")
        wants_image = "image" in (body.get("modalities") or [])
        content = (
            reply.content
            if reply.content is not None
            else (None if reply.tool_calls else ("Here is your image." if wants_image else _reply_text(body)))
        )
        prompt = reply.prompt_tokens if reply.prompt_tokens is not None else _prompt_tokens(body)
        completion = (
            reply.completion_tokens
            if reply.completion_tokens is not None
            else max(1, len(content or orjson.dumps(reply.tool_calls or [])) // 4)
        )
        if body.get("max_tokens"):
            completion = min(completion, int(body["max_tokens"]))
        price = _PRICES.get(model, (Decimal("0.000001"), Decimal("0.000002")))
        cost = reply.cost if reply.cost is not None else float(price[0] * prompt + price[1] * completion)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cost": cost,
            "is_byok": False,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "cost_details": {"upstream_inference_cost": None},
            "completion_tokens_details": {"reasoning_tokens": 0, "image_tokens": 0},
        }
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        created = int(time.time())
        headers = {"x-generation-id": generation, "x-provider-name": "FakeProvider"}
        if not body.get("stream"):
            if isinstance(behaviour, Malformed):
                return Response(b'{"id": "gen-broken", "choices": [', media_type="application/json")
            message: dict[str, Any] = {
                "role": "assistant",
                "content": content,
                "refusal": None,
                "reasoning": None,
            }
            if reply.tool_calls:
                message["tool_calls"] = reply.tool_calls
            if wants_image:
                message["images"] = [
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1X1}"}}
                ]
            if reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay * 4)
            payload = {
                "id": generation,
                "provider": "FakeProvider",
                "model": model,
                "object": "chat.completion",
                "created": created,
                "choices": [
                    {
                        "logprobs": None,
                        "finish_reason": finish,
                        "native_finish_reason": finish,
                        "index": 0,
                        "message": message,
                    }
                ],
                "usage": usage,
            }
            return Response(orjson.dumps(payload), media_type="application/json", headers=headers)
        return StreamingResponse(
            self._stream(body, behaviour, reply, generation, model, created, content, usage, finish),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache"},
        )

    async def _stream(
        self,
        body: dict[str, Any],
        behaviour: Behaviour,
        reply: Reply,
        generation: str,
        model: str,
        created: int,
        content: str | None,
        usage: dict[str, Any],
        finish: str,
    ) -> AsyncIterator[bytes]:
        def frame(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            chunk = {
                "id": generation,
                "provider": "FakeProvider",
                "model": model,
                "object": "chat.completion.chunk",
                "created": created,
                "choices": choices,
                **extra,
            }
            return b"data: " + orjson.dumps(chunk) + b"\n\n"

        def delta(d: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {
                "index": 0,
                "delta": d,
                "finish_reason": finish_reason,
                "native_finish_reason": finish_reason,
                "logprobs": None,
            }

        outcome = "completed"
        try:
            for _ in range(reply.keepalives):
                yield b": OPENROUTER PROCESSING\n\n"
            if reply.interim_usage:
                partial = {
                    **usage,
                    "completion_tokens": 1,
                    "total_tokens": usage["prompt_tokens"] + 1,
                    "cost": 0,
                }
                yield frame([delta({"role": "assistant", "content": ""})], usage=partial)
            else:
                yield frame([delta({"role": "assistant", "content": ""})])
            pieces = _split(content) if content else []
            for sent, piece in enumerate(pieces):
                if isinstance(behaviour, MidStreamError) and sent >= behaviour.after_chunks:
                    extra: dict[str, Any] = {"error": {"code": behaviour.code, "message": behaviour.message}}
                    if behaviour.with_usage:
                        extra["usage"] = usage
                    yield frame([delta({"content": ""}, "error")], **extra)
                    outcome = "error-frame"
                    return
                if isinstance(behaviour, Malformed) and sent >= behaviour.after_chunks:
                    yield b'data: {"id": "gen-broken", "choices": [{\xff\xfe\n\n'
                    outcome = "malformed"
                    return
                if reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
                    if sent == 1:
                        yield b": OPENROUTER PROCESSING\n\n"
                yield frame([delta({"content": piece})])
            for index, call in enumerate(reply.tool_calls or []):
                arguments = call["function"]["arguments"]
                half = len(arguments) // 2
                yield frame(
                    [
                        delta(
                            {
                                "tool_calls": [
                                    {
                                        "index": index,
                                        "id": call["id"],
                                        "type": "function",
                                        "function": {"name": call["function"]["name"], "arguments": ""},
                                    }
                                ]
                            }
                        )
                    ]
                )
                for part in (arguments[:half], arguments[half:]):
                    yield frame([delta({"tool_calls": [{"index": index, "function": {"arguments": part}}]})])
            yield frame([delta({}, finish)])
            yield frame([delta({"role": "assistant", "content": ""})], usage=usage)
            yield b"data: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            raise
        finally:
            if self.record:
                self.stream_outcomes.append(outcome)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8787)
    args = parser.parse_args()
    fake = FakeOpenRouter(args.port)
    fake.valid_keys.add("sk-or-v1-bench")
    fake.record = False
    uvicorn.run(
        fake.app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, lifespan="off"
    )


if __name__ == "__main__":
    main()
