"""HTTP edge of the records API: `/api/database/records/:table` and `/api/database/rpc/:fn`.

InsForge's `verifyUser` guards both (anon key, user JWT or API key; none is 401 in InsForge's shape); past
that, answers and errors are PostgREST's own.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kilnbase.http.request_context import require_credential
from kilnbase.records.errors import RecordsError
from kilnbase.records.service import RecordsEngine, RecordsRequest, RecordsResponse
from kilnbase.server.runtime import runtime_of

_METHODS = ["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"]
#: The request headers the engine reads (ASGI gives names in lower case).
_ENGINE_HEADERS = frozenset(
    {"accept", "prefer", "range", "range-unit", "content-type", "accept-profile", "content-profile"}
)


def engine_of(request: Request) -> RecordsEngine:
    runtime = runtime_of(request)
    if runtime.schema_cache is None:
        raise RuntimeError("the schema cache is not started")
    return RecordsEngine(runtime.database, runtime.schema_cache)


async def _serve(request: Request, resource: str, is_rpc: bool) -> Response:
    principal = require_credential(request)
    headers: dict[str, str] = {}
    prefer: list[str] = []
    for raw_name, raw_value in request.scope["headers"]:
        name = raw_name.decode("latin-1")
        if name in _ENGINE_HEADERS:
            headers[name] = raw_value.decode("latin-1")
            if name == "prefer":
                prefer.append(headers[name])
    if len(prefer) > 1:
        headers["prefer"] = ",".join(prefer)
    records_request = RecordsRequest(
        method=request.method,
        resource=resource,
        is_rpc=is_rpc,
        # What `request.query_params.multi_items()` gives, without building the multidict first.
        query=parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True),
        headers=headers,
        body=b"" if request.method in ("GET", "HEAD") else await request.body(),
        principal=principal,
    )
    try:
        answer = await engine_of(request).handle(records_request)
    except RecordsError as exc:
        body = b"" if request.method == "HEAD" else orjson.dumps(exc.body())
        return Response(
            body,
            status_code=exc.status,
            headers={**exc.headers, "Content-Type": "application/json; charset=utf-8"},
        )
    return _to_response(answer)


def _to_response(answer: RecordsResponse) -> Response:
    headers = dict(answer.headers)
    if answer.status == 204:
        return Response(status_code=204, headers=headers)
    if answer.media_type is not None:
        headers["Content-Type"] = f"{answer.media_type}; charset=utf-8"
    return Response(answer.body, status_code=answer.status, headers=headers)


async def records_endpoint(request: Request) -> Response:
    return await _serve(request, request.path_params["table"], is_rpc=False)


async def rpc_endpoint(request: Request) -> Response:
    return await _serve(request, request.path_params["function"], is_rpc=True)


routes = [
    Route("/api/database/records/{table}", records_endpoint, methods=_METHODS),
    Route("/api/database/rpc/{function}", rpc_endpoint, methods=_METHODS),
    # InsForge forwards `/records/*` to PostgREST as is, so a PostgREST client based there reaches `/rpc/fn`.
    Route("/api/database/records/rpc/{function}", rpc_endpoint, methods=_METHODS),
]
