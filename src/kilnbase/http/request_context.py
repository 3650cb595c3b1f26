"""Per-request plumbing: CORS, the caller, and one structured log line per request, in one layer.

A pure ASGI middleware (no `BaseHTTPMiddleware`), because it sits on every request's path. The principal is
resolved here and kept in the scope; an invalid credential is remembered, not answered, so that public
routes (health, JWKS) still answer, and every route that needs a caller fails closed with 401.

CORS is Starlette's middleware, consulted only when the request has an `Origin` (a browser's): the request
headers are read here anyway, and a request without an origin needs nothing from CORS but `Vary: Origin`.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kilnbase.http.errors import ApiError
from kilnbase.http.principal import ANONYMOUS, CredentialError, CredentialResolver, Principal
from kilnbase.logs.structured import log_request

_PRINCIPAL = "kilnbase.principal"
_CREDENTIAL_ERROR = "kilnbase.credential_error"
#: Any origin, with credentials (the origin is reflected, never `*`), as InsForge allows.
CORS_POLICY: dict[str, Any] = {
    "allow_origin_regex": r".*",
    "allow_credentials": True,
    "allow_methods": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    "allow_headers": ["*"],
    "expose_headers": ["Content-Range", "Preference-Applied"],
    "max_age": 86400,
}
_VARY_ORIGIN = (b"vary", b"Origin")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, resolver: CredentialResolver) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, **CORS_POLICY)
        self.resolver = resolver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        authorization = api_key = origin = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-api-key":
                api_key = value.decode("latin-1")
            elif name == b"origin":
                origin = value
        principal: Principal | None
        try:
            principal = self.resolver.resolve(authorization, api_key)
        except CredentialError as exc:
            principal = None
            scope[_CREDENTIAL_ERROR] = str(exc)
        scope[_PRINCIPAL] = principal
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if origin is None:  # (with an origin, CORS writes the header)
                    message["headers"] = [*message.get("headers", ()), _VARY_ORIGIN]
            await send(message)

        try:
            await (self.app if origin is None else self.cors)(scope, receive, send_wrapper)
        finally:
            log_request(
                {
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "role": principal.db_role if principal else "invalid",
                }
            )


def principal_of(request: Request) -> Principal:
    """The caller, or 401 when a credential was presented and is invalid. No credential is anon."""
    return principal_in(request.scope)


def principal_in(scope: Scope) -> Principal:
    """`principal_of` for plain ASGI endpoints."""
    principal: Principal | None = scope.get(_PRINCIPAL, ANONYMOUS)
    if principal is None:
        reason = scope.get(_CREDENTIAL_ERROR, "invalid credential")
        raise ApiError(
            401,
            "AUTH_UNAUTHORIZED",
            f"Authentication failed: {reason}.",
            "Send a valid API key, anon key or access token; sign in again if the token expired.",
        )
    return principal


def require_credential(request: Request) -> Principal:
    """A caller that presented a valid credential of any kind (InsForge's `verifyUser`)."""
    return credential_in(request.scope)


def credential_in(scope: Scope) -> Principal:
    """`require_credential` for plain ASGI endpoints."""
    principal = principal_in(scope)
    if principal is ANONYMOUS:
        raise ApiError(
            401,
            "AUTH_UNAUTHORIZED",
            "Authentication required.",
            "Send the anon key, an access token, or the API key as 'Authorization: Bearer ...'.",
        )
    return principal


def require_admin(request: Request) -> Principal:
    """The API key or a project_admin JWT (InsForge's `verifyAdmin`)."""
    principal = require_credential(request)
    if not principal.is_admin:
        raise ApiError(
            403,
            "FORBIDDEN",
            "This endpoint needs admin rights.",
            "Use the project's API key (kilnbase keys) or sign in as the project admin.",
        )
    return principal
