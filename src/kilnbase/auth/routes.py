"""Auth endpoints under `/api/auth` (InsForge's contract), plus the public JWKS.

Users, sessions, profiles, the auth config and the root admin live here; email flows in `email_routes`,
OAuth in `oauth_routes`, device authorization in `device_routes`. Handlers parse the request, call the
service (`Auth`), and shape the answer.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from kilnbase.auth.accounts import (
    PROFILE_BODY_MAX_BYTES,
    CodeSignIn,
    PasswordSignIn,
    ProfileUpdate,
    SessionResult,
    SignUp,
    profile_too_large,
)
from kilnbase.auth.admin import AdminSignIn
from kilnbase.auth.auth_config import AuthConfigUpdate
from kilnbase.auth.device_routes import DeviceRoutes
from kilnbase.auth.edge import REFRESH_HINT, SessionEdge, client_type_of, public_actor
from kilnbase.auth.email_routes import EmailRoutes
from kilnbase.auth.gate import caller_actor, token_actor, user_actor
from kilnbase.auth.jwt_provider_routes import JwtProviderRoutes
from kilnbase.auth.jwt_provider_tools import jwt_provider_tools
from kilnbase.auth.oauth_routes import OAuthRoutes
from kilnbase.auth.services import Auth
from kilnbase.auth.sessions import SessionKind
from kilnbase.auth.tools import auth_tools
from kilnbase.auth.validation import UUID_PATTERN, StrictBody, parse_body, read_body
from kilnbase.capability import Capability
from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.credential_refusals import key_presented
from kilnbase.http.errors import ApiError, error_response
from kilnbase.http.json_body import body_at_most, decode_json
from kilnbase.http.responses import json_response


def _user_id(value: str) -> str:
    if not UUID_PATTERN.match(value):
        raise ValueError("Invalid user ID format")
    return value


#: More digits than any limit or offset the user list takes.
_MOST_DIGITS = 18
JWKS_PATH = "/.well-known/jwks.json"
PUBLIC_CONFIG_PATH = "/api/auth/public-config"


def _lenient_int(raw: str | None, default: int, low: int) -> int:
    """InsForge's reading of `limit` and `offset` on the user list: `parseInt`, the default when that
    fails or is 0, never below `low`; never an error. (Kilnbase also caps them, so a page stays bounded.)"""
    match = re.match(r"\s*([-+]?)(\d+)", raw or "", re.ASCII)  # (JavaScript's digits: ASCII only)
    # (A number of thousands of digits is not read whole: `int` refuses past 4,300, and the caps below win.)
    if match is None:
        return max(low, default)
    digits = match.group(2).lstrip("0")[:_MOST_DIGITS]
    parsed = int(match.group(1) + digits) if digits else 0
    return max(low, parsed or default)  # (`parseInt(x) || default`: 0 is the default too)


class DeleteUsers(StrictBody):
    userIds: list[Annotated[str, AfterValidator(_user_id)]] = Field(min_length=1, max_length=1000)


class AuthRoutes:
    def __init__(self, auth: Auth) -> None:
        self.auth = auth
        self.edge = SessionEdge(auth.parts)

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(self.auth.parts.keys.jwks(), headers={"Cache-Control": "public, max-age=300"})

    # --- configuration -------------------------------------------------------------------------------------

    async def public_config(self, request: Request) -> Response:
        return json_response(await self.auth.admin.public_config())

    async def get_config(self, request: Request) -> Response:
        return json_response(await self.auth.admin.config(admin_actor(request)))

    async def put_config(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(
            await self.auth.admin.update_config(actor, await read_body(request, AuthConfigUpdate))
        )

    # --- users and sessions --------------------------------------------------------------------------------

    async def create_user(self, request: Request) -> Response:
        """A sign-up; with admin rights, an admin adding a user (no session, `autoConfirm` honoured)."""
        actor = caller_actor(request)
        client_type = client_type_of(request)
        body = await read_body(request, SignUp)
        if actor.is_admin:
            result = await self.auth.accounts.create_user(actor, body)
        else:
            result = await self.auth.accounts.sign_up(actor, body, client_type)
        return self.edge.response(request, result, client_type)

    async def create_session(self, request: Request) -> Response:
        actor = public_actor(request)
        client_type = client_type_of(request)
        data = decode_json(await request.body(), optional=True)
        method = data.get("method") if isinstance(data, dict) else None
        accounts = self.auth.accounts
        result: SessionResult
        if method == "otp":
            result = await accounts.sign_in_with_code(actor, parse_body(CodeSignIn, data), client_type)
        elif method in ("password", None):
            result = await accounts.sign_in_with_password(
                actor, parse_body(PasswordSignIn, data), client_type
            )
        else:
            raise ApiError(
                400,
                "INVALID_INPUT",
                "method: Invalid discriminator value. Expected 'password' | 'otp'",
                "Send method 'password' (with email and password) or 'otp' (with email and otp), or "
                "leave it out.",
            )
        return self.edge.response(request, result, client_type)

    async def _refresh(self, request: Request, kind: SessionKind) -> Response:
        """Rotate the refresh token (cookie or body); a refused one also clears the cookie it came in."""
        client_type = client_type_of(request)
        token, from_cookie = await self.edge.refresh_token(request, client_type, kind)
        actor = public_actor(request)
        try:
            if not token and from_cookie:
                what = "admin refresh token" if kind == "admin" else "refresh token"
                raise ApiError(401, "AUTH_UNAUTHORIZED", f"No {what} provided", "Sign in again.")
            if not token:
                problem = "Required" if token is None else "refreshToken is required"
                raise ApiError(400, "INVALID_INPUT", f"refreshToken: {problem}", REFRESH_HINT)
            if kind == "admin":
                result = await self.auth.admin.refresh(actor, token, client_type)
            else:
                result = await self.auth.accounts.refresh(actor, token, client_type)
        except ApiError as exc:
            response = error_response(exc.status, exc.code, exc.message, exc.next_actions)
            if from_cookie and exc.status == 401:
                self.edge.clear_cookie(request, response, kind)
            return response
        return self.edge.response(request, result, client_type, kind=kind)

    async def refresh(self, request: Request) -> Response:
        return await self._refresh(request, "user")

    async def _logout(self, request: Request, kind: SessionKind) -> Response:
        """Ends the session of the refresh token (cookie or body) or, failing that, of the bearer access
        token; `scope=global` ends every session of that subject. A stale token still gets its cookie
        cleared."""
        client_type = client_type_of(request)
        scope = request.query_params.get("scope", "local")
        if scope not in ("local", "global"):
            raise ApiError(
                400,
                "INVALID_INPUT",
                "scope must be 'local' or 'global'.",
                "Send scope=local to end this session, or scope=global to end every session of the user.",
            )
        token, _from_cookie = await self.edge.refresh_token(request, client_type, kind)
        await self.auth.accounts.sign_out(public_actor(request), kind, token, everywhere=scope == "global")
        response = json_response({"success": True, "message": "Logged out successfully"})
        if client_type == "web":
            self.edge.clear_cookie(request, response, kind)
        return response

    async def logout(self, request: Request) -> Response:
        return await self._logout(request, "user")

    async def current_session(self, request: Request) -> Response:
        return json_response({"user": await self.auth.accounts.current_user(user_actor(request))})

    async def update_profile(self, request: Request) -> Response:
        actor = token_actor(request)
        raw = await body_at_most(request, PROFILE_BODY_MAX_BYTES, profile_too_large)
        change = parse_body(ProfileUpdate, decode_json(raw, optional=True))
        return json_response(await self.auth.accounts.update_profile(actor, change))

    async def get_profile(self, request: Request) -> Response:
        actor = public_actor(request)
        return json_response(await self.auth.accounts.profile(actor, request.path_params["user_id"]))

    # --- admin: users --------------------------------------------------------------------------------------

    async def list_users(self, request: Request) -> Response:
        actor = admin_actor(request)
        limit = min(_lenient_int(request.query_params.get("limit"), 10, 1), 1000)
        offset = min(_lenient_int(request.query_params.get("offset"), 0, 0), 100_000_000)
        search = request.query_params.get("search") or None
        return json_response(
            await self.auth.admin.list_users(actor, limit=limit, offset=offset, search=search)
        )

    async def get_user(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(await self.auth.admin.user(actor, request.path_params["user_id"]))

    async def delete_users(self, request: Request) -> Response:
        actor = admin_actor(request)
        body = await read_body(request, DeleteUsers)
        deleted = await self.auth.admin.delete_users(actor, body.userIds)
        return json_response({"message": "Users deleted successfully", "deletedCount": deleted})

    async def anon_token(self, request: Request) -> Response:
        """Deprecated in InsForge, still called by `@insforge/mcp`'s get-anon-key tool."""
        key = self.auth.admin.anon_key(admin_actor(request))
        return json_response({"accessToken": key, "message": "Anonymous key (opaque, rotatable)."})

    # --- root admin (dashboard) ----------------------------------------------------------------------------

    async def admin_sign_in(self, request: Request) -> Response:
        client_type = client_type_of(request)
        body = await read_body(request, AdminSignIn)
        result = await self.auth.admin.sign_in(public_actor(request), body, client_type)
        return self.edge.response(request, result, client_type, kind="admin")

    async def admin_refresh(self, request: Request) -> Response:
        return await self._refresh(request, "admin")

    async def admin_logout(self, request: Request) -> Response:
        return await self._logout(request, "admin")

    async def admin_current_session(self, request: Request) -> Response:
        """InsForge's `verifyToken` and a role check; Kilnbase takes the API key too."""
        actor = admin_actor(request) if key_presented(request.scope) else token_actor(request)
        return json_response({"admin": self.auth.admin.current(actor)})

    def routes(self) -> list[BaseRoute]:
        return [
            Route(JWKS_PATH, self.jwks, methods=["GET"]),
            Route(f"/api{JWKS_PATH}", self.jwks, methods=["GET"]),
            Route(PUBLIC_CONFIG_PATH, self.public_config, methods=["GET"]),
            Route("/api/auth/config", self.get_config, methods=["GET"]),
            Route("/api/auth/config", self.put_config, methods=["PUT"]),
            Route("/api/auth/users", self.create_user, methods=["POST"]),
            Route("/api/auth/users", self.list_users, methods=["GET"]),
            Route("/api/auth/users", self.delete_users, methods=["DELETE"]),
            Route("/api/auth/users/{user_id}", self.get_user, methods=["GET"]),
            Route("/api/auth/sessions", self.create_session, methods=["POST"]),
            Route("/api/auth/sessions/current", self.current_session, methods=["GET"]),
            Route("/api/auth/refresh", self.refresh, methods=["POST"]),
            Route("/api/auth/logout", self.logout, methods=["POST"]),
            Route("/api/auth/profiles/current", self.update_profile, methods=["PATCH"]),
            Route("/api/auth/profiles/{user_id}", self.get_profile, methods=["GET"]),
            Route("/api/auth/tokens/anon", self.anon_token, methods=["POST"]),
            Route("/api/auth/admin/sessions", self.admin_sign_in, methods=["POST"]),
            Route("/api/auth/admin/sessions/current", self.admin_current_session, methods=["GET"]),
            Route("/api/auth/admin/refresh", self.admin_refresh, methods=["POST"]),
            Route("/api/auth/admin/logout", self.admin_logout, methods=["POST"]),
        ]


def capability(auth: Auth) -> Capability:
    routes = [
        *AuthRoutes(auth).routes(),
        *EmailRoutes(auth).routes(),
        *OAuthRoutes(auth).routes(),
        *JwtProviderRoutes(auth.jwt_providers).routes(),
        *DeviceRoutes(auth.parts, auth.devices).routes(),
    ]
    tools = [*auth_tools(auth), *jwt_provider_tools(auth.jwt_providers)]
    return Capability(
        "auth",
        routes,
        lifespan=auth.running,
        background=auth.sweeping,
        tools=tools,
        public=(JWKS_PATH, f"/api{JWKS_PATH}", PUBLIC_CONFIG_PATH),
    )
