"""An open upstream chat stream, relayed as OpenAI chunks, and recorded once whatever ends it.

Usage is stripped from the chunks (each surface decides whether and how to send it) and kept: the last
cumulative figure the provider sent, never a sum. Whatever ends the stream (its end, an error frame,
malformed bytes, or the client going away) closes the upstream call, settles the reservation and writes the
ledger row; when the provider never sent its figures, what was seen is billed (the prompt's estimate and the
text relayed).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio

from kilnbase.ai import openai_shapes
from kilnbase.ai.lifecycle import Call, CallLifecycle
from kilnbase.ai.providers import StreamBroken, UpstreamStream


class ChatStream:
    def __init__(
        self,
        lifecycle: CallLifecycle,
        call: Call,
        upstream: UpstreamStream,
        model: str,
        include_usage: bool,
    ) -> None:
        self._lifecycle = lifecycle
        self._call = call
        self._upstream = upstream
        self.model = model
        self.include_usage = include_usage
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.usage: dict[str, Any] | None = None
        self.status: str | None = None
        self.error: str | None = None
        self._ttft: float | None = None
        self._chars = 0
        self._role_sent = False
        self._closed = False

    def _keep(self, choice: dict[str, Any]) -> bool:
        """Whether a choice says anything: OpenRouter sends empty deltas (and a role on every chunk)."""
        delta = choice.get("delta") or {}
        if (
            choice.get("finish_reason")
            or delta.get("tool_calls")
            or delta.get("content")
            or delta.get("refusal")
        ):
            return True
        if delta.get("role") and not self._role_sent:
            self._role_sent = True
            return True
        return bool(delta.get("reasoning"))

    def _broken(self, error: Any) -> StreamBroken:
        message = error.get("message") if isinstance(error, dict) else None
        return StreamBroken(
            f"The provider failed mid-stream: {self._lifecycle.redact(str(message or 'unknown error'))}"
        )

    async def chunks(self) -> AsyncIterator[dict[str, Any] | None]:
        """OpenAI chunks; None for a keepalive. Raises StreamBroken when the stream fails midway."""
        try:
            async for event in self._upstream.events():
                if event is None:
                    yield None
                    continue
                usage = event.get("usage")
                if isinstance(usage, dict):
                    self.usage = usage
                if event.get("error"):
                    raise self._broken(event["error"])
                choices = []
                for choice in event.get("choices") or []:
                    if self._keep(choice):
                        choices.append(openai_shapes.stream_choice(choice))
                        self._chars += len((choice.get("delta") or {}).get("content") or "")
                if not choices:
                    continue
                if self._ttft is None:
                    self._ttft = time.perf_counter() - self._call.started
                if isinstance(event.get("id"), str):
                    self.id = event["id"]
                if isinstance(event.get("model"), str):
                    self.model = event["model"]
                yield openai_shapes.stream_chunk(
                    self.id, self.created, self.model, event.get("system_fingerprint"), choices
                )
            self.status = "ok"
        except StreamBroken as exc:
            self.status, self.error = "error", exc.message
            raise
        finally:
            await self.close()

    def usage_chunk(self) -> dict[str, Any]:
        return openai_shapes.usage_chunk(self.id, self.created, self.model, self.usage)

    async def close(self) -> None:
        """Idempotent: closes the upstream call (cancelling it if still running) and records the outcome."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._upstream.aclose()
        status = self.status or "abandoned"
        usage = self.usage
        if usage is None:
            prompt, _ = self._call.estimate
            usage = {"prompt_tokens": prompt, "completion_tokens": max(0, self._chars // 4)}
        self._call.record.model = self.model
        self._lifecycle.finish(
            self._call,
            status,
            usage=usage,
            http_status=200,
            error=self.error
            if status == "error"
            else ("the client went away" if status == "abandoned" else None),
            ttft=self._ttft,
        )
