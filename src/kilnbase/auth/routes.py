"""Auth endpoints. For now the public JWKS document, at both paths InsForge serves it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from kilnbase.server.runtime import runtime_of


async def jwks(request: Request) -> Response:
    return JSONResponse(runtime_of(request).keys.jwks(), headers={"Cache-Control": "public, max-age=300"})


routes: list[BaseRoute] = [
    Route("/.well-known/jwks.json", jwks, methods=["GET"]),
    Route("/api/.well-known/jwks.json", jwks, methods=["GET"]),
]
