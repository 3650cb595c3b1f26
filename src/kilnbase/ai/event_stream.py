"""A server-sent-events response that notices a client leaving while the upstream is still silent.

Starlette's StreamingResponse (ASGI spec >= 2.4) only learns of a disconnect at its next write, so a slow
upstream would keep running, and billing, for nobody. This response listens for `http.disconnect` beside
the stream and cancels it at once; the body iterator is always closed, so the upstream call is closed too.
While the stream is silent (a reasoning model thinking), it sends a `: keepalive` comment every `keepalive`
seconds, so that proxies with idle timeouts (nginx, ALB, Envoy) do not cut it; SSE clients ignore comments.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self, events: AsyncIterator[bytes], headers: dict[str, str] | None = None, keepalive: float = 15.0
    ) -> None:
        self.events = events
        self.keepalive = keepalive
        self.status_code = 200
        self.background = None
        self.init_headers({**SSE_HEADERS, **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        lock = anyio.Lock()
        last_write = time.monotonic()

        async def write(body: bytes, more: bool = True) -> None:
            nonlocal last_write
            async with lock:
                await send({"type": "http.response.body", "body": body, "more_body": more})
            last_write = time.monotonic()

        try:
            async with anyio.create_task_group() as group:

                async def relay() -> None:
                    try:
                        async for chunk in self.events:
                            await write(chunk)
                        await write(b"", more=False)
                    except OSError:
                        pass
                    group.cancel_scope.cancel()

                async def watch() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()

                async def keep_alive() -> None:
                    while True:
                        await anyio.sleep(max(0.01, last_write + self.keepalive - time.monotonic()))
                        if time.monotonic() - last_write >= self.keepalive:
                            await write(b": keepalive\n\n")

                group.start_soon(relay)
                group.start_soon(watch)
                if self.keepalive > 0:
                    group.start_soon(keep_alive)
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self.events, "aclose", None)
                if aclose is not None:
                    await aclose()
