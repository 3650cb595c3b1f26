"""HTTP edge of the records API: `/api/database/records/:table` and `/api/database/rpc/:fn`.

InsForge's `verifyUser` guards both (anon key, user JWT or API key; none is 401 in InsForge's shape); past
that, answers and errors are PostgREST's own.

The endpoints are plain ASGI apps, not Starlette request/response functions: the engine takes and returns
plain data, so a `Request` and a `Response` object per call would only be built to be taken apart again,
and this is the hottest path of the server.
"""

from __future__ import annotations

import orjson
from starlette.requests import ClientDisconnect
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from kilnbase.http.request_context import credential_in
from kilnbase.records.api_request import RecordsRequest
from kilnbase.records.errors import RecordsError, valid_header
from kilnbase.records.response import RecordsResponse
from kilnbase.records.service import RecordsEngine
from kilnbase.server.runtime import runtime_in

_METHODS = ["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"]
#: The request headers the engine reads (ASGI gives names in lower case).
_ENGINE_HEADERS = frozenset(
    {b"accept", b"prefer", b"range", b"range-unit", b"content-type", b"accept-profile", b"content-profile"}
)
_JSON_UTF8 = b"application/json; charset=utf-8"


def engine_in(scope: Scope) -> RecordsEngine:
    runtime = runtime_in(scope)
    if runtime.schema_cache is None:
        raise RuntimeError("the schema cache is not started")
    return RecordsEngine(runtime.database, runtime.schema_cache)


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

    def __init__(self, parameter: str, *, is_rpc: bool) -> None:
        self.parameter = parameter
        self.is_rpc = is_rpc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = credential_in(scope)
        method: str = scope["method"]
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            if raw_name in _ENGINE_HEADERS:
                name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
                # Several `Prefer` headers count as one, joined (the only repeatable header read here).
                headers[name] = f"{headers[name]},{value}" if name == "prefer" and name in headers else value
        request = RecordsRequest(
            method=method,
            resource=scope["path_params"][self.parameter],
            is_rpc=self.is_rpc,
            query_string=scope["query_string"].decode("latin-1"),
            headers=headers,
            body=b"" if method in ("GET", "HEAD") else await read_body(receive),
            principal=principal,
        )
        try:
            answer = await engine_in(scope).handle(request)
        except RecordsError as exc:
            error_headers = _encoded(exc.headers)
            error_headers.append((b"content-type", _JSON_UTF8))
            # PostgREST names the error here too, so a HEAD (no body) still tells which one it was. (A code
            # raised from SQL is the function's choice: it goes on the wire only if it is a plain value.)
            proxy_status = f"PostgREST; error={exc.code}"
            if valid_header("proxy-status", proxy_status):
                error_headers.append((b"proxy-status", proxy_status.encode("latin-1")))
            await _respond(send, exc.status, error_headers, orjson.dumps(exc.body()), method)
            return
        await _respond(send, answer.status, _raw_headers(answer), answer.body.encode(), method)


def _encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """ASGI's form: names in lower case."""
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


def _raw_headers(answer: RecordsResponse) -> list[tuple[bytes, bytes]]:
    raw = _encoded(answer.headers)
    if answer.status != 204 and answer.media_type is not None:
        raw.append((b"content-type", f"{answer.media_type}; charset=utf-8".encode("latin-1")))
    return raw


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, method: str
) -> None:
    if status == 204 or status < 200:
        body = b""
    else:
        if method == "HEAD":
            body = b""
        headers.append((b"content-length", str(len(body)).encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


routes = [
    Route("/api/database/records/{table}", RecordsEndpoint("table", is_rpc=False), methods=_METHODS),
    Route("/api/database/rpc/{function}", RecordsEndpoint("function", is_rpc=True), methods=_METHODS),
    # InsForge forwards `/records/*` to PostgREST as is, so a PostgREST client based there reaches `/rpc/fn`.
    Route("/api/database/records/rpc/{function}", RecordsEndpoint("function", is_rpc=True), methods=_METHODS),
]
