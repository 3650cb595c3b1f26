"""HTTP edge helpers shared by auth's route modules: client type, client address, the refresh-token cookie,
and the session response (`{user, accessToken, csrfToken | refreshToken}`)."""

from __future__ import annotations

import ipaddress
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from kilnbase.auth.accounts import AuthContext, SessionResult
from kilnbase.auth.services import auth_services
from kilnbase.auth.sessions import CLIENT_TYPES, IssuedTokens, SessionKind
from kilnbase.http.errors import ApiError
from kilnbase.server.runtime import runtime_of

USER_COOKIE = "insforge_refresh_token"
ADMIN_COOKIE = "insforge_admin_refresh_token"
COOKIE_PATH = "/api/auth"


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def client_type_of(request: Request) -> str:
    value = request.query_params.get("client_type", "web")
    if value not in CLIENT_TYPES:
        raise ApiError(400, "INVALID_INPUT", "client_type must be one of web, mobile, desktop, server.")
    return value


def client_ip(request: Request) -> str | None:
    if runtime_of(request).auth_settings.trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return request.client.host if request.client else None


def db_ip(request: Request) -> str | None:
    """The client address if it is an IP (the test client's is a name)."""
    ip = client_ip(request)
    if ip is None:
        return None
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return None
    return ip


def context_of(request: Request) -> AuthContext:
    runtime = runtime_of(request)
    return AuthContext(
        db=runtime.database,
        services=auth_services(runtime),
        box=runtime.secret_box,
        base_url=runtime.settings.base_url,
        client_type=client_type_of(request),
        ip=db_ip(request),
        user_agent=request.headers.get("user-agent"),
    )


def _secure(request: Request) -> bool:
    return request.url.scheme == "https" or runtime_of(request).settings.base_url.startswith("https://")


def set_refresh_cookie(request: Request, response: Response, kind: SessionKind, tokens: IssuedTokens) -> None:
    """httpOnly, path /api/auth, 7 days. Cross-site (SameSite=None) needs Secure, so over plain http
    the cookie is SameSite=Lax, which still works for a frontend on the same site (localhost on any port)."""
    secure = _secure(request)
    response.set_cookie(
        ADMIN_COOKIE if kind == "admin" else USER_COOKIE,
        tokens.refresh_token,
        max_age=runtime_of(request).auth_settings.refresh_token_seconds,
        path=COOKIE_PATH,
        httponly=True,
        secure=secure,
        samesite="none" if secure else "lax",
    )


def clear_refresh_cookie(request: Request, response: Response, kind: SessionKind) -> None:
    secure = _secure(request)
    response.delete_cookie(
        ADMIN_COOKIE if kind == "admin" else USER_COOKIE,
        path=COOKIE_PATH,
        httponly=True,
        secure=secure,
        samesite="none" if secure else "lax",
    )


def session_response(
    request: Request, result: SessionResult, client_type: str, kind: SessionKind = "user", status: int = 200
) -> Response:
    body: dict[str, Any] = {
        "user": result.user,
        "accessToken": result.tokens.access_token if result.tokens else None,
    }
    if result.require_verification:
        body["requireEmailVerification"] = True
    tokens = result.tokens
    if tokens is not None:
        if client_type == "web":
            body["csrfToken"] = tokens.csrf_token
        else:
            body["refreshToken"] = tokens.refresh_token
    response = json_response(body, status)
    if tokens is not None and client_type == "web":
        set_refresh_cookie(request, response, kind, tokens)
    return response


def refresh_token_from(
    request: Request, body: Any, client_type: str, kind: SessionKind
) -> tuple[str | None, bool]:
    """(token, from_cookie). Web clients send the cookie; others send `refreshToken` or `refresh_token`."""
    if client_type != "web":
        token = None
        if isinstance(body, dict):
            token = body.get("refreshToken") or body.get("refresh_token")
        if token is not None and not isinstance(token, str):
            raise ApiError(400, "INVALID_INPUT", "refreshToken must be a string.")
        return token, False
    return request.cookies.get(ADMIN_COOKIE if kind == "admin" else USER_COOKIE), True


def require_csrf(request: Request, refresh_token: str) -> None:
    header = request.headers.get("x-csrf-token")
    if not auth_services(runtime_of(request)).sessions.csrf_matches(header, refresh_token):
        raise ApiError(
            403,
            "FORBIDDEN",
            "Missing or invalid CSRF token.",
            "Send the csrfToken from the last sign-in or refresh as the X-CSRF-Token header.",
        )
