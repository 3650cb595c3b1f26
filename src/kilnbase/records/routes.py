"""HTTP edge of the records API: `/api/database/records/:table` and `/api/database/rpc/:fn`.

InsForge's `verifyUser` guards both (anon key, user JWT or API key; none is 401 in InsForge's shape); past
that, answers and errors are PostgREST's own.

The endpoints are plain ASGI apps, not Starlette request/response functions: the engine takes and returns
plain data, so a `Request` and a `Response` object per call would only be built to be taken apart again,
and this is the hottest path of the server. A client that hangs up takes its query with it: the statement is
cancelled on the server, not left to run to its timeout.
"""

from __future__ import annotations

import asyncio
import functools

import orjson
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from kilnbase.capability import Capability
from kilnbase.http.disconnect import watch_client
from kilnbase.http.request_context import credential_in, headers_in
from kilnbase.http.responses import encode_headers, send_body
from kilnbase.records import media_type
from kilnbase.records.api_request import RecordsRequest
from kilnbase.records.errors import RecordsError, valid_header
from kilnbase.records.response import RecordsResponse
from kilnbase.records.service import RecordsEngine

_METHODS = ["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"]
#: The request headers the engine reads (ASGI gives names in lower case), with their names as text.
_ENGINE_HEADERS = {
    name.encode(): name
    for name in (
        "accept",
        "prefer",
        "range",
        "range-unit",
        "content-type",
        "accept-profile",
        "content-profile",
    )
}
_JSON_UTF8 = b"application/json; charset=utf-8"


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class RecordsEndpoint:
    """One of the two resources (`table` or `function` in the path), as an ASGI app."""

    def __init__(self, engine: RecordsEngine, parameter: str, *, is_rpc: bool) -> None:
        self.engine = engine
        self.parameter = parameter
        self.is_rpc = is_rpc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = credential_in(scope)
        method: str = scope["method"]
        named = headers_in(scope)
        headers: dict[str, str] = {}
        for raw in _ENGINE_HEADERS.keys() & named:  # (a loop, not a comprehension: no frame of its own)
            headers[_ENGINE_HEADERS[raw]] = named[raw].decode("latin-1")
        if "prefer" in headers and len(named) < len(scope["headers"]):
            # Several `Prefer` headers count as one, joined (the only repeatable header read here); the
            # headers by name keep only the last, so the list is read when some name came more than once.
            headers["prefer"] = ",".join(v.decode("latin-1") for n, v in scope["headers"] if n == b"prefer")
        request = RecordsRequest(
            method=method,
            resource=scope["path_params"][self.parameter],
            is_rpc=self.is_rpc,
            query_string=scope["query_string"].decode("latin-1"),
            headers=headers,
            body=b"" if method in ("GET", "HEAD") else await read_body(receive),
            principal=principal,
        )
        # A client that leaves takes its statement with it (watched here rather than through
        # `unless_client_leaves`: one coroutine frame less on the hottest path).
        watch = watch_client(receive)
        try:
            answer: RecordsResponse | RecordsError = await self.engine.handle(request)
        except RecordsError as exc:
            answer = exc
        except asyncio.CancelledError:
            if watch.excuses():
                return  # its statement was cancelled; nobody is there to answer
            raise
        finally:
            watch.end()
        if isinstance(answer, RecordsError):
            await _send_error(send, answer, head=method == "HEAD")
            return
        body = answer.body
        if not self.is_rpc and answer.status != 204 and (not body or (body[0].isspace() and body.isspace())):
            # InsForge's proxy answers a blank PostgREST body with `[]` on the records route (its SDK's
            # users see it), keeping PostgREST's status and headers.
            answer.body = "[]"
            answer.media_type = answer.media_type or media_type.JSON
        await send_body(
            send, answer.status, _raw_headers(answer), answer.body.encode(), head=method == "HEAD"
        )


async def _send_error(send: Send, error: RecordsError, *, head: bool) -> None:
    headers = encode_headers(error.headers)
    headers.append((b"content-type", _JSON_UTF8))
    # PostgREST names the error here too, so a HEAD (no body) still tells which one it was. (A code raised
    # from SQL is the function's choice: it goes on the wire only if it is a plain value.)
    proxy_status = f"PostgREST; error={error.code}"
    if valid_header("proxy-status", proxy_status):
        headers.append((b"proxy-status", proxy_status.encode("latin-1")))
    await send_body(send, error.status, headers, orjson.dumps(error.body()), head=head)


def _raw_headers(answer: RecordsResponse) -> list[tuple[bytes, bytes]]:
    raw = encode_headers(answer.headers)
    if answer.status != 204 and answer.media_type is not None:
        raw.append(_content_type(answer.media_type))
    return raw


@functools.lru_cache(maxsize=64)
def _content_type(media_type: str) -> tuple[bytes, bytes]:
    """The header for a media type the engine answers with: a handful in practice, and at most 64 kept."""
    return (b"content-type", f"{media_type}; charset=utf-8".encode("latin-1"))


def routes(engine: RecordsEngine) -> list[BaseRoute]:
    return [
        Route(
            "/api/database/records/{table}", RecordsEndpoint(engine, "table", is_rpc=False), methods=_METHODS
        ),
        Route(
            "/api/database/rpc/{function}", RecordsEndpoint(engine, "function", is_rpc=True), methods=_METHODS
        ),
        # InsForge forwards `/records/*` to PostgREST as is, so a PostgREST client based there reaches
        # `/rpc/fn`.
        Route(
            "/api/database/records/rpc/{function}",
            RecordsEndpoint(engine, "function", is_rpc=True),
            methods=_METHODS,
        ),
    ]


def capability(engine: RecordsEngine) -> Capability:
    return Capability("records", routes(engine))
