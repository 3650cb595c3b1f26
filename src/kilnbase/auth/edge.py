"""HTTP edge helpers shared by auth's route modules: client type, the refresh-token cookie, and the session
response (`{user, accessToken, csrfToken | refreshToken}`)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from kilnbase.auth.accounts import AuthContext, SessionResult
from kilnbase.auth.services import Auth
from kilnbase.auth.sessions import CLIENT_TYPES, IssuedTokens, SessionKind
from kilnbase.http.errors import ApiError
from kilnbase.http.request_context import client_ip
from kilnbase.http.responses import json_response

USER_COOKIE = "insforge_refresh_token"
ADMIN_COOKIE = "insforge_admin_refresh_token"
COOKIE_PATH = "/api/auth"


def client_type_of(request: Request) -> str:
    value = request.query_params.get("client_type", "web")
    if value not in CLIENT_TYPES:
        raise ApiError(400, "INVALID_INPUT", "client_type must be one of web, mobile, desktop, server.")
    return value


def context_of(auth: Auth, request: Request) -> AuthContext:
    return AuthContext(
        db=auth.database,
        services=auth.services,
        box=auth.secret_box,
        base_url=auth.server.base_url,
        client_type=client_type_of(request),
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )


def _secure(auth: Auth, request: Request) -> bool:
    return request.url.scheme == "https" or auth.server.base_url.startswith("https://")


def set_refresh_cookie(
    auth: Auth, request: Request, response: Response, kind: SessionKind, tokens: IssuedTokens
) -> None:
    """httpOnly, path /api/auth, 7 days. Cross-site (SameSite=None) needs Secure, so over plain http
    the cookie is SameSite=Lax, which still works for a frontend on the same site (localhost on any port)."""
    secure = _secure(auth, request)
    response.set_cookie(
        ADMIN_COOKIE if kind == "admin" else USER_COOKIE,
        tokens.refresh_token,
        max_age=auth.services.settings.refresh_token_seconds,
        path=COOKIE_PATH,
        httponly=True,
        secure=secure,
        samesite="none" if secure else "lax",
    )


def clear_refresh_cookie(auth: Auth, request: Request, response: Response, kind: SessionKind) -> None:
    secure = _secure(auth, request)
    response.delete_cookie(
        ADMIN_COOKIE if kind == "admin" else USER_COOKIE,
        path=COOKIE_PATH,
        httponly=True,
        secure=secure,
        samesite="none" if secure else "lax",
    )


def session_response(
    auth: Auth,
    request: Request,
    result: SessionResult,
    client_type: str,
    kind: SessionKind = "user",
    status: int = 200,
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
        set_refresh_cookie(auth, request, response, kind, tokens)
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


def require_csrf(auth: Auth, request: Request, refresh_token: str) -> None:
    header = request.headers.get("x-csrf-token")
    if not auth.services.sessions.csrf_matches(header, refresh_token):
        raise ApiError(
            403,
            "FORBIDDEN",
            "Missing or invalid CSRF token.",
            "Send the csrfToken from the last sign-in or refresh as the X-CSRF-Token header.",
        )
