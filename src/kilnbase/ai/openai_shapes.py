"""OpenAI's wire shapes, made from what a provider sent: completions, usage, embeddings, stream chunks.

Providers speak dialects of OpenAI's format (OpenRouter adds `provider`, `native_finish_reason`, `usage.cost`,
a usage chunk whose `choices` is not empty); what a caller receives is OpenAI's own shape, field for field, so
that the `openai` SDKs and everything written against them read it unchanged.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from decimal import Decimal
from typing import Any


def usage(reported: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI's `usage` object from a provider's (missing fields are 0; totals are recomputed if absent)."""
    reported = reported or {}
    prompt = int(reported.get("prompt_tokens") or 0)
    completion = int(reported.get("completion_tokens") or 0)
    prompt_details = reported.get("prompt_tokens_details") or {}
    completion_details = reported.get("completion_tokens_details") or {}
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(reported.get("total_tokens") or prompt + completion),
        "prompt_tokens_details": {"cached_tokens": int(prompt_details.get("cached_tokens") or 0)},
        "completion_tokens_details": {
            "reasoning_tokens": int(completion_details.get("reasoning_tokens") or 0)
        },
    }


def reported_cost(reported: dict[str, Any] | None) -> Decimal | None:
    """The cost a provider reported in its usage (OpenRouter's `usage.cost`), when it did."""
    cost = (reported or {}).get("cost")
    if isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0:
        return Decimal(str(cost))
    return None


def completion(upstream: dict[str, Any], model: str) -> dict[str, Any]:
    """A `chat.completion` object: the provider's choices reduced to OpenAI's fields."""
    choices = []
    for index, choice in enumerate(upstream.get("choices") or []):
        source = choice.get("message") or {}
        message: dict[str, Any] = {
            "role": source.get("role") or "assistant",
            "content": source.get("content"),
            "refusal": source.get("refusal"),
        }
        for extra in ("tool_calls", "annotations"):
            if source.get(extra):
                message[extra] = source[extra]
        choices.append(
            {
                "index": choice.get("index", index),
                "message": message,
                "logprobs": choice.get("logprobs"),
                "finish_reason": choice.get("finish_reason"),
            }
        )
    return {
        "id": upstream.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": upstream.get("created") or int(time.time()),
        "model": upstream.get("model") or model,
        "choices": choices,
        "usage": usage(upstream.get("usage")),
        "system_fingerprint": upstream.get("system_fingerprint"),
    }


def embeddings(upstream: dict[str, Any], model: str) -> dict[str, Any] | None:
    """An embeddings `list` with float vectors; None when the provider's `data` is not a list."""
    data = upstream.get("data")
    if not isinstance(data, list):
        return None
    reported = upstream.get("usage") or {}
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": item.get("index", i), "embedding": item.get("embedding")}
            for i, item in enumerate(data)
        ],
        "model": upstream.get("model") or model,
        "usage": {
            "prompt_tokens": int(reported.get("prompt_tokens") or 0),
            "total_tokens": int(reported.get("total_tokens") or reported.get("prompt_tokens") or 0),
        },
    }


def embeddings_as_base64(answer: dict[str, Any]) -> dict[str, Any]:
    """Vectors as base64 of little-endian float32, as the `openai` SDK asks for by default and decodes."""
    return {
        **answer,
        "data": [
            {
                **item,
                "embedding": base64.b64encode(
                    struct.pack(f"<{len(item['embedding'])}f", *item["embedding"])
                ).decode(),
            }
            for item in answer["data"]
        ],
    }


def stream_choice(choice: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": choice.get("index", 0),
        "delta": choice.get("delta") or {},
        "logprobs": choice.get("logprobs"),
        "finish_reason": choice.get("finish_reason"),
    }


def stream_chunk(
    chunk_id: str, created: int, model: str, fingerprint: Any, choices: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": choices,
    }


def usage_chunk(chunk_id: str, created: int, model: str, reported: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI's last chunk when `stream_options.include_usage` asked for it: `choices` always empty."""
    return {**stream_chunk(chunk_id, created, model, None, []), "usage": usage(reported)}
