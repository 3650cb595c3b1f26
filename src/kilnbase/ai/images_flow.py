"""Image generation, as OpenRouter offers it: a chat call with `modalities: ["image", "text"]`, once per image
asked for (a model answers with one image a call), the images taken from `message.images[]`.

The reservation counts every image asked for; if a call fails midway, what the earlier calls used is billed.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from kilnbase.ai import openai_shapes, requests
from kilnbase.ai.caller import Caller
from kilnbase.ai.errors import GatewayError
from kilnbase.ai.lifecycle import CallLifecycle, estimate_prompt_tokens
from kilnbase.ai.providers import Provider, UpstreamResponse

#: Completion tokens reserved for each image's accompanying text.
_TEXT_TOKENS = 1024


async def _generate(provider: Provider, body: dict[str, Any], key: str | None) -> UpstreamResponse:
    return await provider.chat(body, key)


def _request(body: dict[str, Any], input_images: list[str] | None) -> dict[str, Any]:
    content: Any = body["prompt"]
    if input_images:
        content = [
            {"type": "text", "text": body["prompt"]},
            *({"type": "image_url", "image_url": {"url": url}} for url in input_images),
        ]
    return {
        "model": body["model"],
        "messages": [{"role": "user", "content": content}],
        "modalities": ["image", "text"],
    }


async def images(
    lifecycle: CallLifecycle,
    caller: Caller,
    raw: Any,
    *,
    endpoint: str,
    input_images: list[str] | None = None,
) -> tuple[list[str], str | None, dict[str, Any], str]:
    """(data URLs, text, usage, model that served)."""
    started = time.perf_counter()
    body = requests.validate_image(raw)
    n = int(body.get("n") or 1)
    chat_body = _request(body, input_images)
    call = await lifecycle.prepare(caller, chat_body, endpoint, [], started)
    model_info = lifecycle.catalog.lookup("openrouter", body["model"])
    outputs = ((model_info or {}).get("architecture") or {}).get("output_modalities")
    if isinstance(outputs, list) and "image" not in outputs:
        raise GatewayError(
            400,
            f"Model {body['model']} does not generate images.",
            code="model_not_supported",
            param="model",
        )
    prompt_tokens = estimate_prompt_tokens(chat_body["messages"])
    call.estimate = (prompt_tokens, _TEXT_TOKENS)
    price = call.price.price
    # Each image is its own upstream call: one prompt, one reply, one image, n times over.
    usd_each = price.cost(prompt_tokens, _TEXT_TOKENS, 1) if price else Decimal(0)
    found: list[str] = []
    text: str | None = None
    totals = {"prompt_tokens": 0, "completion_tokens": 0}
    model = body["model"]
    with lifecycle.accounted(call):
        await lifecycle.reserve(call, (prompt_tokens + _TEXT_TOKENS) * n, usd_each * n)
        call.spent = Decimal(0)
        for _ in range(n):
            upstream, model, _target = await lifecycle.call(call, _generate)
            usage = openai_shapes.usage(upstream.body.get("usage"))
            totals["prompt_tokens"] += usage["prompt_tokens"]
            totals["completion_tokens"] += usage["completion_tokens"]
            call.used = totals
            call.spent += openai_shapes.reported_cost(upstream.body.get("usage")) or Decimal(0)
            message = ((upstream.body.get("choices") or [{}])[0]).get("message") or {}
            text = message.get("content") or text
            for image in message.get("images") or []:
                url = (image.get("image_url") or {}).get("url")
                if isinstance(url, str):
                    found.append(url)
            call.images = len(found)
            if len(found) >= n:
                break
    call.record.model = model
    lifecycle.finish(
        call, "ok", usage=totals, cost=call.spent or None, http_status=200, images=len(found[:n])
    )
    return found[:n], text, totals, model
