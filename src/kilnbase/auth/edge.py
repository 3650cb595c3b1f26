"""HTTP edge pieces shared by auth's route modules: the client type, the refresh-token cookie and its CSRF
check, and the session response (`{user, accessToken, csrfToken | refreshToken}`). Web clients keep the
refresh token in an httpOnly cookie; the others get it in the body."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from kilnbase.auth.accounts import SessionResult
from kilnbase.auth.parts import AuthParts
from kilnbase.auth.sessions import CLIENT_TYPES, IssuedTokens, SessionKind
from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import read_json, zod_type
from kilnbase.http.request_context import actor_of, principal_of
from kilnbase.http.responses import json_response
from kilnbase.identity.actor import Actor
from kilnbase.identity.principal import ANONYMOUS

USER_COOKIE = "insforge_refresh_token"
ADMIN_COOKIE = "insforge_admin_refresh_token"
COOKIE_PATH = "/api/auth"
#: For a refresh token missing or malformed in a body.
REFRESH_HINT = "Send refreshToken, the string the last sign-in or refresh answered with."


def client_type_of(request: Request) -> str:
    """`?client_type=`: mobile, desktop or server; anything else is web, as InsForge's `parseClientType`
    reads it."""
    value = request.query_params.get("client_type", "web")
    return value if value in CLIENT_TYPES else "web"


def public_actor(request: Request) -> Actor:
    """The caller of a public flow (sign-in, refresh, sign-out, OAuth callback): a credential that is
    presented but invalid counts as none, since a client refreshing its session may well send its expired
    access token."""
    try:
        principal = principal_of(request)
    except ApiError:
        principal = ANONYMOUS
    return actor_of(request, principal)


class SessionEdge:
    def __init__(self, parts: AuthParts) -> None:
        self._parts = parts

    def _secure(self, request: Request) -> bool:
        return request.url.scheme == "https" or self._parts.base_url.startswith("https://")

    def _cookie_flags(self, request: Request) -> dict[str, Any]:
        """httpOnly, path /api/auth. Cross-site (SameSite=None) needs Secure, so over plain http the cookie
        is SameSite=Lax, which still works for a frontend on the same site (localhost on any port)."""
        secure = self._secure(request)
        return {
            "path": COOKIE_PATH,
            "httponly": True,
            "secure": secure,
            "samesite": "none" if secure else "lax",
        }

    def set_cookie(
        self, request: Request, response: Response, kind: SessionKind, tokens: IssuedTokens
    ) -> None:
        response.set_cookie(
            ADMIN_COOKIE if kind == "admin" else USER_COOKIE,
            tokens.refresh_token,
            max_age=self._parts.settings.refresh_token_seconds,
            **self._cookie_flags(request),
        )

    def clear_cookie(self, request: Request, response: Response, kind: SessionKind) -> None:
        response.delete_cookie(
            ADMIN_COOKIE if kind == "admin" else USER_COOKIE, **self._cookie_flags(request)
        )

    def response(
        self,
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
                body["csrfToken"] = self._parts.sessions.csrf_token(tokens.refresh_token)
            else:
                body["refreshToken"] = tokens.refresh_token
        response = json_response(body, status)
        if tokens is not None and client_type == "web":
            self.set_cookie(request, response, kind, tokens)
        return response

    async def refresh_token(
        self, request: Request, client_type: str, kind: SessionKind
    ) -> tuple[str | None, bool]:
        """(token, from_cookie). Web clients send the cookie, whose use needs the CSRF header; the others
        send `refreshToken` or `refresh_token` in the body."""
        if client_type != "web":
            body = await read_json(request, optional=True)
            token = None
            if isinstance(body, dict):
                token = body.get("refreshToken")
                if token is None:
                    token = body.get("refresh_token")
            if token is not None and not isinstance(token, str):
                received = zod_type(token)
                raise ApiError(
                    400, "INVALID_INPUT", f"refreshToken: Expected string, received {received}", REFRESH_HINT
                )
            return token, False
        token = request.cookies.get(ADMIN_COOKIE if kind == "admin" else USER_COOKIE)
        if token:
            self._require_csrf(request, token)
        return token, True

    def _require_csrf(self, request: Request, refresh_token: str) -> None:
        header = request.headers.get("x-csrf-token")
        if not self._parts.sessions.csrf_matches(header, refresh_token):
            raise ApiError(
                403,
                "FORBIDDEN",
                "Invalid CSRF token",
                "Send the csrfToken from the last sign-in or refresh as the X-CSRF-Token header.",
            )
