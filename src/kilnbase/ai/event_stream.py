"""A server-sent-events response that notices a client leaving while the upstream is still silent.

Starlette's StreamingResponse (ASGI spec >= 2.4) only learns of a disconnect at its next write, so a slow
upstream would keep running, and billing, for nobody. This response listens for `http.disconnect` beside
the stream and cancels it at once; the body iterator is always closed, so the upstream call is closed too.
While the stream is silent (a reasoning model thinking), it sends a `: keepalive` comment every `keepalive`
seconds, so that proxies with idle timeouts (nginx, ALB, Envoy) do not cut it; SSE clients ignore comments.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

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
        # The relay runs in the request's own task; a watcher task cancels it when the client leaves, and
        # a timer (not a task) sends keepalives: no task group, since this is on every stream's path.
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        lock = asyncio.Lock()
        last_write = loop.time()
        left = False
        keepalives: set[asyncio.Task[None]] = set()
        timer: asyncio.TimerHandle | None = None

        async def write(body: bytes, more: bool = True) -> None:
            nonlocal last_write
            async with lock:
                await send({"type": "http.response.body", "body": body, "more_body": more})
            last_write = loop.time()

        async def watch() -> None:
            nonlocal left
            while (await receive())["type"] != "http.disconnect":
                pass
            left = True
            task.cancel()

        async def keep_alive() -> None:
            with contextlib.suppress(OSError):
                await write(b": keepalive\n\n")

        def tick() -> None:
            nonlocal timer
            if loop.time() - last_write >= self.keepalive:
                sending = loop.create_task(keep_alive())
                keepalives.add(sending)
                sending.add_done_callback(keepalives.discard)
                timer = loop.call_later(self.keepalive, tick)
            else:
                timer = loop.call_at(last_write + self.keepalive, tick)

        watcher = loop.create_task(watch())
        if self.keepalive > 0:
            timer = loop.call_later(self.keepalive, tick)
        try:
            async for chunk in self.events:
                await write(chunk)
            await write(b"", more=False)
        except OSError:
            pass
        except asyncio.CancelledError:
            if not left:
                raise
            task.uncancel()  # the client left: that ends the stream, it does not fail the request
        finally:
            watcher.cancel()
            if timer is not None:
                timer.cancel()
            for sending in keepalives:
                sending.cancel()
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await asyncio.shield(aclose())
