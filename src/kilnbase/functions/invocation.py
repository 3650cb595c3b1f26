"""`ANY /functions/:slug[/*]`: an invocation, proxied to a warm worker of the function's current version.

A plain ASGI endpoint, so nothing is buffered: the request body streams to the worker as it arrives (raw
bytes, so binary and multipart bodies arrive as sent), and the response streams back chunk by chunk (SSE
included). The function sees the method, the path after `/functions` (`/slug/rest`), the query and the
headers; Kilnbase adds `x-kilnbase-request-id`, the id its log lines carry.

The client's address is Kilnbase's to say (`http.client_address`): headers in which a client could claim one
are dropped, and `X-Forwarded-For` (the client, then the trusted proxies it came through) and `X-Real-IP`
(the client) are set from that rule, the names Supabase's and InsForge's functions read. A function that
limits or logs by address cannot be fooled by a header the client wrote.

Limits: past `max_concurrency` invocations of one function in flight, 429; no response start within the
time limit (or no chunk for that long), 504, and a worker that then no longer answers a probe (an infinite
loop) is killed and replaced; a worker that dies mid-request (a crash, the heap cap), 502.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

from starlette.types import Message, Receive, Scope, Send

from kilnbase.functions.definitions import SLUG
from kilnbase.functions.runtime import Definition, Runtime
from kilnbase.functions.worker_http import WorkerGone
from kilnbase.functions.workers import DenoWorker, FunctionLoadError, FunctionPool
from kilnbase.http.disconnect import unless_client_leaves
from kilnbase.http.errors import error_body
from kilnbase.http.request_context import forwarded_chain_in
from kilnbase.http.responses import send_json

PREFIX = "/functions/"
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"expect",
    }
)
#: Headers that claim the client's address: only Kilnbase's own decision reaches a function.
_CLIENT_ADDRESS = frozenset(
    {b"x-forwarded-for", b"x-real-ip", b"forwarded", b"x-client-ip", b"true-client-ip", b"cf-connecting-ip"}
)
#: What a path keeps as it is when it has to be percent-encoded: RFC 3986's path characters, and `%`.
_PATH_SAFE = "/%!$&'()*+,;=:@~"
_RESPONSE_DROP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"trailer"})


def _forwarded_path(scope: Scope) -> str:
    """The path the function is given, `/slug[/rest]`, as the client wrote it: percent-encoded, not decoded.

    Decoded, it would not be the client's path (`a%2Fb` would become two segments, `%3F` the start of a
    query), and could not even be written on the request line to the worker (a `%FF` decodes to a character
    outside Latin-1, a `%00` to NUL, which the worker refuses with a bare 400). A scope made in process (the
    MCP tool) has no raw path: its path is percent-encoded where it must be."""
    raw: bytes = scope.get("raw_path") or quote(scope["path"], safe=_PATH_SAFE).encode()
    _, _, after_root = raw.partition(b"/")
    _, _, after_prefix = after_root.partition(b"/")  # past `functions`, however the client spelt it
    return "/" + after_prefix.decode("latin-1")


class Invocation:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.config = runtime.config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        slug = scope["path"][len(PREFIX) :].partition("/")[0]
        definition = await self.runtime.definition(slug) if SLUG.match(slug) else None
        if definition is None or definition.status != "active":
            await _error(
                send, 404, "FUNCTION_NOT_FOUND", f"Function not found: {slug}", "Deploy it, or set it active."
            )
            return
        inflight = self.runtime.inflight.get(slug, 0)
        if inflight >= self.config.max_concurrency:
            await send_json(
                send,
                429,
                error_body(
                    429,
                    "TOO_MANY_REQUESTS",
                    f"Function {slug} already has {inflight} invocations in flight.",
                    "Retry shortly (KILNBASE_FUNCTIONS_MAX_CONCURRENCY sets the limit).",
                ),
                {"retry-after": "1"},
            )
            return
        self.runtime.inflight[slug] = inflight + 1
        path = _forwarded_path(scope)
        request_id = uuid.uuid4().hex
        started = time.perf_counter()
        status = 500
        try:
            status = await self._invoke(scope, receive, send, definition, path, request_id)
        finally:
            self.runtime.inflight[slug] -= 1
            duration = (time.perf_counter() - started) * 1000
            self.runtime.logs.invocation(
                slug, request_id, f"{scope['method']} {path} -> {status}", status, duration
            )

    async def _invoke(
        self, scope: Scope, receive: Receive, send: Send, definition: Definition, path: str, request_id: str
    ) -> int:
        try:
            pool = await self.runtime.pool_for(definition)
        except FunctionLoadError as exc:
            return await _error(
                send,
                502,
                "FUNCTION_LOAD_FAILED",
                str(exc),
                "Fix the function and deploy it again.",
                request_id,
            )
        worker = await pool.live_worker(self.config.start_timeout_seconds)
        if worker is None:
            return await _error(
                send,
                503,
                "FUNCTION_UNAVAILABLE",
                "The function's workers are restarting.",
                "Retry shortly.",
                request_id,
            )
        pool.begin()
        worker.inflight += 1
        try:
            return await self._proxy(scope, receive, send, pool, worker, path, request_id)
        finally:
            worker.inflight -= 1
            pool.end()

    async def _proxy(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        pool: FunctionPool,
        worker: DenoWorker,
        path: str,
        request_id: str,
    ) -> int:
        limit = self.config.timeout_ms / 1000
        headers: list[tuple[bytes, bytes]] = []
        content_length: int | None = None
        chunked = has_host = False
        for name, value in scope["headers"]:
            if name in _HOP_BY_HOP or name in _CLIENT_ADDRESS or name.startswith(b"x-kilnbase-"):
                chunked = chunked or name == b"transfer-encoding"
                continue
            if name == b"content-length":
                content_length = int(value) if value.isdigit() and len(value) < 20 else None
                continue
            has_host = has_host or name == b"host"
            headers.append((name, value))
        if not has_host:
            headers.append((b"host", b"localhost"))
        headers.append((b"x-kilnbase-request-id", request_id.encode()))
        chain = forwarded_chain_in(scope)
        if chain:
            headers.append((b"x-forwarded-for", ", ".join(chain).encode()))
            headers.append((b"x-real-ip", chain[0].encode()))
        query = scope.get("query_string", b"")
        target = path + ("?" + query.decode("latin-1") if query else "")
        has_body = chunked or bool(content_length)
        body = _RequestBody(receive) if has_body else None
        loop = asyncio.get_running_loop()
        slug = pool.spec.slug
        try:
            async with asyncio.timeout(limit):
                response = await worker.client.request(
                    scope["method"],
                    target,
                    headers,
                    body,
                    content_length if has_body and not chunked else None,
                )
        except TimeoutError:
            self.runtime.check_worker(pool, worker)
            self.runtime.logs.line(slug, request_id, "error", "The invocation passed its time limit.")
            return await _error(
                send,
                504,
                "FUNCTION_TIMEOUT",
                f"The function did not answer within {self.config.timeout_ms} ms.",
                "Make it faster, or raise WORKER_TIMEOUT_MS.",
                request_id,
            )
        except WorkerGone:
            await asyncio.sleep(0.05)  # (the exit, when the worker died, is seen by now)
            code = worker.exit_code
            self.runtime.logs.line(slug, request_id, "error", f"The worker stopped (exit code {code}).")
            return await _error(
                send,
                502,
                "FUNCTION_CRASHED",
                "The function's worker stopped while handling this request"
                + (f" (exit code {code})." if code is not None else "."),
                "See function.logs for its last lines; the worker has been replaced.",
                request_id,
            )

        async def stream() -> None:
            try:
                # The limit applies to each chunk: a stream may run long, but never go silent for longer.
                async with asyncio.timeout(limit) as deadline:
                    async for chunk in response.chunks():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                        deadline.reschedule(loop.time() + limit)
            except (TimeoutError, WorkerGone):
                pass  # the status is sent: end the body where it stands
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            response_headers = [
                (name.lower(), value)
                for name, value in response.headers
                if name.lower() not in _RESPONSE_DROP
            ]
            response_headers.append((b"x-kilnbase-request-id", request_id.encode()))
            await send(
                {"type": "http.response.start", "status": response.status, "headers": response_headers}
            )
            if body is None or body.done:
                # A client that leaves ends the stream (and the function's side of it), even an endless one.
                await unless_client_leaves(receive, stream())
            else:  # the function answered before reading the whole body: the body still owns `receive`
                await stream()
            return response.status
        finally:
            await response.aclose()


class _RequestBody:
    """The request body as it streams in, remembering whether it was read to its end."""

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            message: Message = await self.receive()
            if message["type"] == "http.disconnect":
                self.done = True
                return
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                self.done = True
                return


async def _error(
    send: Send,
    status: int,
    code: str,
    message: str,
    next_actions: str | None = None,
    request_id: str | None = None,
) -> int:
    headers = {"x-kilnbase-request-id": request_id} if request_id else None
    await send_json(send, status, error_body(status, code, message, next_actions), headers)
    return status
