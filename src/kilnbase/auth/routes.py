"""Auth endpoints under `/api/auth` (InsForge's contract), plus the public JWKS.

Users, sessions, profiles, the auth config and the root admin live here; email flows in `email_routes`,
OAuth in `oauth_routes`. Handlers parse, call a service, and shape the answer.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from kilnbase import audit
from kilnbase.auth import accounts, auth_config, email_routes, oauth_routes, users
from kilnbase.auth.accounts import SessionResult
from kilnbase.auth.edge import (
    clear_refresh_cookie,
    client_type_of,
    context_of,
    refresh_token_from,
    require_csrf,
    session_response,
)
from kilnbase.auth.oauth_routes import oauth_providers_public
from kilnbase.auth.root_admin import admin_subject, admin_user_json, credentials_match
from kilnbase.auth.services import Auth
from kilnbase.auth.sessions import SessionKind, end_sessions, relax_durability, reused_error
from kilnbase.auth.validation import UUID_PATTERN
from kilnbase.capability import Capability
from kilnbase.http.errors import ApiError, error_response
from kilnbase.http.json_body import parse, read_json
from kilnbase.http.query_params import int_param
from kilnbase.http.rate_limit import enforce
from kilnbase.http.request_context import actor_of, client_ip, principal_of, require_admin, require_credential
from kilnbase.http.responses import json_response
from kilnbase.identity.principal import CredentialKind, Principal


async def jwks(auth: Auth, request: Request) -> Response:
    return JSONResponse(auth.keys.jwks(), headers={"Cache-Control": "public, max-age=300"})


def _user_id(value: str) -> str:
    if not UUID_PATTERN.match(value):
        raise ApiError(400, "INVALID_INPUT", "Invalid user ID format.")
    return value.lower()


def _require_user(request: Request) -> Principal:
    principal = require_credential(request)
    if (
        principal.kind is not CredentialKind.JWT
        or principal.db_role != "authenticated"
        or not principal.user_id
    ):
        raise ApiError(
            401, "AUTH_UNAUTHORIZED", "A user access token is required.", "Sign in as a user first."
        )
    return principal


async def _require_live_session(auth: Auth, request: Request, principal: Principal) -> None:
    """Access tokens carry their session (`sid`); once that session is signed out they stop working here."""
    sid = principal.claims.get("sid")
    if isinstance(sid, str):
        live = await auth.services.sessions.family_is_live(auth.database, sid)
        if not live:
            raise ApiError(401, "AUTH_UNAUTHORIZED", "This session has been signed out.", "Sign in again.")


# --- configuration ---------------------------------------------------------------------------------------


async def public_config(auth: Auth, request: Request) -> Response:
    row = await auth_config.read(auth.database)
    built_in, custom = await oauth_providers_public(auth.database)
    return json_response(
        {"oAuthProviders": built_in, "customOAuthProviders": custom, **auth_config.public_config_json(row)}
    )


async def get_config(auth: Auth, request: Request) -> Response:
    require_admin(request)
    return json_response(auth_config.config_json(await auth_config.read(auth.database)))


async def put_config(auth: Auth, request: Request) -> Response:
    principal = require_admin(request)
    change = parse(auth_config.AuthConfigUpdate, await read_json(request))
    async with auth.database.as_owner() as cur:
        row = await auth_config.update(cur, change)
        await audit.record(
            cur,
            actor_of(request, principal),
            "UPDATE_AUTH_CONFIG",
            "AUTH",
            {"updatedFields": sorted(change.model_dump(exclude_unset=True))},
        )
    return json_response(auth_config.config_json(row))


# --- users and sessions ---------------------------------------------------------------------------------


async def create_user(auth: Auth, request: Request) -> Response:
    principal = principal_of(request)
    ctx = context_of(auth, request)
    body = parse(accounts.SignUp, await read_json(request))
    settings = auth.services.settings
    await enforce(
        auth.rate_limiter,
        f"sign-up:{client_ip(request)}",
        settings.sign_up_limit,
        settings.rate_limit_window_seconds,
    )
    result = await accounts.sign_up(ctx, body, caller_is_admin=principal.is_admin)
    if principal.is_admin:
        await audit.record(
            auth.database,
            actor_of(request, principal),
            "CREATE_USER",
            "AUTH",
            {"userId": result.user["id"], "email": result.user["email"]},
        )
    response = session_response(auth, request, result, ctx.client_type)
    if result.pending is not None:
        response.background = email_routes.delivery(result.pending)
    return response


async def create_session(auth: Auth, request: Request) -> Response:
    ctx = context_of(auth, request)
    data = await read_json(request)
    settings = auth.services.settings
    window = settings.rate_limit_window_seconds
    method = data.get("method", "password") if isinstance(data, dict) else None
    result: SessionResult
    if method == "otp":
        await enforce(auth.rate_limiter, f"verify:{client_ip(request)}", settings.verify_limit, window)
        result = await accounts.sign_in_with_code(ctx, parse(accounts.CodeSignIn, data))
    elif method == "password":
        body = parse(accounts.PasswordSignIn, data)
        key = f"sign-in:{client_ip(request)}:{body.email}"
        await enforce(auth.rate_limiter, key, settings.sign_in_limit, window)
        result = await accounts.sign_in_with_password(ctx, body)
    else:
        raise ApiError(400, "INVALID_INPUT", "method must be 'password' or 'otp'.")
    return session_response(auth, request, result, ctx.client_type)


async def refresh_session(auth: Auth, request: Request) -> Response:
    client_type = client_type_of(request)
    body = await read_json(request, optional=True) if client_type != "web" else None
    token, from_cookie = refresh_token_from(request, body, client_type, "user")
    try:
        if not token:
            raise ApiError(401, "AUTH_UNAUTHORIZED", "No refresh token provided.", "Sign in again.")
        if from_cookie:
            require_csrf(auth, request, token)
        result = await accounts.refresh(context_of(auth, request), token)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.next_actions)
        if from_cookie and exc.status == 401:
            clear_refresh_cookie(auth, request, response, "user")
        return response
    return session_response(auth, request, result, client_type)


async def _logout(auth: Auth, request: Request, kind: SessionKind) -> Response:
    """Ends the session of the refresh token (cookie or body) or, failing that, of the bearer access token;
    `scope=global` ends every session of that subject. A stale token still gets its cookie cleared."""
    client_type = client_type_of(request)
    body = await read_json(request, optional=True) if client_type != "web" else None
    scope = request.query_params.get("scope", "local")
    if scope not in ("local", "global"):
        raise ApiError(400, "INVALID_INPUT", "scope must be 'local' or 'global'.")
    token, from_cookie = refresh_token_from(request, body, client_type, kind)
    if token and from_cookie:
        require_csrf(auth, request, token)
    try:
        principal: Principal | None = principal_of(request)
    except ApiError:
        principal = None
    sid: str | None = None
    if principal is not None and principal.kind is CredentialKind.JWT:
        expected_role = "project_admin" if kind == "admin" else "authenticated"
        claimed = principal.claims.get("sid")
        if principal.db_role == expected_role and isinstance(claimed, str):
            sid = claimed
    async with auth.database.as_owner() as cur:
        ended = await end_sessions(
            cur, kind, refresh_token=token, family_id=sid, everywhere=scope == "global"
        )
    if scope == "global" and not ended:
        raise ApiError(401, "AUTH_UNAUTHORIZED", "Signing out everywhere needs a valid session.")
    response = json_response({"success": True, "message": "Logged out successfully"})
    if client_type == "web":
        clear_refresh_cookie(auth, request, response, kind)
    return response


async def logout(auth: Auth, request: Request) -> Response:
    return await _logout(auth, request, "user")


async def current_session(auth: Auth, request: Request) -> Response:
    principal = require_credential(request)
    if principal.kind is not CredentialKind.JWT:
        raise ApiError(401, "AUTH_UNAUTHORIZED", "An access token is required.", "Sign in first.")
    await _require_live_session(auth, request, principal)
    if principal.db_role == "project_admin":
        who = admin_subject(principal.email or auth.server.root_admin_username)
        return json_response({"user": admin_user_json(who, auth.started_at)})
    if principal.db_role != "authenticated" or not principal.user_id:
        raise ApiError(401, "AUTH_UNAUTHORIZED", "A user access token is required.")
    async with auth.database.as_owner() as cur:
        row = await users.by_id(cur, principal.user_id)
    if row is None:
        raise ApiError(401, "AUTH_UNAUTHORIZED", "The user of this token no longer exists.", "Sign in again.")
    return json_response({"user": {**users.user_json(row), "role": "authenticated"}})


class ProfileUpdate(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    profile: dict[str, Any]

    @field_validator("profile")
    @classmethod
    def _size(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > 100:
            raise ValueError("at most 100 fields")
        return value


async def update_profile(auth: Auth, request: Request) -> Response:
    principal = _require_user(request)
    await _require_live_session(auth, request, principal)
    change = parse(ProfileUpdate, await read_json(request))
    assert principal.user_id is not None
    async with auth.database.as_owner() as cur:
        row = await users.merge_profile(cur, principal.user_id, change.profile)
    if row is None:
        raise ApiError(404, "NOT_FOUND", "User not found.")
    return json_response({"id": str(row["id"]), "profile": row["profile"]})


async def get_profile(auth: Auth, request: Request) -> Response:
    principal_of(request)
    user_id = _user_id(request.path_params["user_id"])
    async with auth.database.as_owner() as cur:
        row = await users.public_profile(cur, user_id)
    if row is None:
        raise ApiError(404, "NOT_FOUND", "User not found.")
    return json_response({"id": str(row["id"]), "profile": row["profile"]})


# --- admin: users ---------------------------------------------------------------------------------------


async def list_users(auth: Auth, request: Request) -> Response:
    require_admin(request)
    limit = int_param(request, "limit", 10, 1, 1000)
    offset = int_param(request, "offset", 0, 0, 100_000_000)
    search = request.query_params.get("search") or None
    async with auth.database.as_owner() as cur:
        rows, total = await users.list_page(cur, limit=limit, offset=offset, search=search)
    return json_response(
        {
            "data": [users.user_json(r) for r in rows],
            "pagination": {"offset": offset, "limit": limit, "total": total},
        }
    )


async def get_user(auth: Auth, request: Request) -> Response:
    require_admin(request)
    user_id = _user_id(request.path_params["user_id"])
    async with auth.database.as_owner() as cur:
        row = await users.by_id(cur, user_id)
    if row is None:
        raise ApiError(404, "NOT_FOUND", "User not found.")
    return json_response(users.user_json(row))


class DeleteUsers(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    userIds: list[str] = Field(min_length=1, max_length=1000)

    @field_validator("userIds")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        for item in value:
            if not UUID_PATTERN.match(item):
                raise ValueError(f"Invalid user ID format: {item!r}")
        return value


async def delete_users(auth: Auth, request: Request) -> Response:
    principal = require_admin(request)
    body = parse(DeleteUsers, await read_json(request))
    async with auth.database.as_owner() as cur:
        deleted = await users.delete_many(cur, body.userIds)
        await audit.record(
            cur,
            actor_of(request, principal),
            "DELETE_USERS",
            "AUTH",
            {"userIds": body.userIds, "deletedCount": deleted},
        )
    return json_response({"message": "Users deleted successfully", "deletedCount": deleted})


async def anon_token(auth: Auth, request: Request) -> Response:
    """Deprecated in InsForge, still called by `@insforge/mcp`'s get-anon-key tool."""
    require_admin(request)
    return json_response(
        {
            "accessToken": auth.keys.ring.current("anon_key"),
            "message": "Anonymous key (opaque, rotatable).",
        }
    )


# --- root admin (dashboard) -----------------------------------------------------------------------------


class AdminSignIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    email: str | None = Field(None, max_length=256)
    username: str | None = Field(None, max_length=256)
    password: str = Field(max_length=1024)


async def admin_sign_in(auth: Auth, request: Request) -> Response:
    body = parse(AdminSignIn, await read_json(request))
    settings = auth.services.settings
    name = body.username if body.username is not None else body.email
    if name is None:
        raise ApiError(400, "INVALID_INPUT", "username (or email) is required.")
    key = f"admin-sign-in:{client_ip(request)}"
    await enforce(auth.rate_limiter, key, settings.sign_in_limit, settings.rate_limit_window_seconds)
    expected_name = auth.server.root_admin_username
    if not credentials_match(name, body.password, expected_name, auth.keys.root_admin_password):
        raise ApiError(401, "AUTH_INVALID_CREDENTIALS", "Invalid admin credentials.")
    ctx = context_of(auth, request)
    who = admin_subject(expected_name)
    async with auth.database.as_owner() as cur:
        tokens = await ctx.services.sessions.issue(
            cur, who, client_type=ctx.client_type, ip=ctx.ip, user_agent=ctx.user_agent
        )
        signed_in = Principal(
            db_role="project_admin",
            kind=CredentialKind.JWT,
            email=expected_name,
            claims={"role": "project_admin"},
        )
        await audit.record(cur, actor_of(request, signed_in), "ADMIN_SIGN_IN", "AUTH")
    result = SessionResult(admin_user_json(who, auth.started_at), tokens)
    return session_response(auth, request, result, ctx.client_type, kind="admin")


async def admin_refresh(auth: Auth, request: Request) -> Response:
    client_type = client_type_of(request)
    body = await read_json(request, optional=True) if client_type != "web" else None
    token, from_cookie = refresh_token_from(request, body, client_type, "admin")
    ctx = context_of(auth, request)
    try:
        if not token:
            raise ApiError(401, "AUTH_UNAUTHORIZED", "No refresh token provided.", "Sign in again.")
        if from_cookie:
            require_csrf(auth, request, token)
        who = admin_subject(auth.server.root_admin_username)
        async with auth.database.as_owner() as cur:
            redeemed = await ctx.services.sessions.redeem(cur, token, "admin")
            if redeemed is not None:
                await relax_durability(cur)
                tokens = await ctx.services.sessions.issue(
                    cur,
                    who,
                    client_type=client_type,
                    family_id=redeemed[0],
                    ip=ctx.ip,
                    user_agent=ctx.user_agent,
                )
        if redeemed is None:
            raise reused_error()
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.next_actions)
        if from_cookie and exc.status == 401:
            clear_refresh_cookie(auth, request, response, "admin")
        return response
    result = SessionResult(admin_user_json(who, auth.started_at), tokens)
    return session_response(auth, request, result, client_type, kind="admin")


async def admin_logout(auth: Auth, request: Request) -> Response:
    return await _logout(auth, request, "admin")


async def admin_current_session(auth: Auth, request: Request) -> Response:
    principal = require_admin(request)
    if principal.kind is CredentialKind.JWT:
        await _require_live_session(auth, request, principal)
    return json_response({"admin": {"sub": principal.user_id or "api-key", "email": principal.email}})


def routes(auth: Auth) -> list[BaseRoute]:
    return [
        Route("/.well-known/jwks.json", partial(jwks, auth), methods=["GET"]),
        Route("/api/.well-known/jwks.json", partial(jwks, auth), methods=["GET"]),
        Route("/api/auth/public-config", partial(public_config, auth), methods=["GET"]),
        Route("/api/auth/config", partial(get_config, auth), methods=["GET"]),
        Route("/api/auth/config", partial(put_config, auth), methods=["PUT"]),
        Route("/api/auth/users", partial(create_user, auth), methods=["POST"]),
        Route("/api/auth/users", partial(list_users, auth), methods=["GET"]),
        Route("/api/auth/users", partial(delete_users, auth), methods=["DELETE"]),
        Route("/api/auth/users/{user_id}", partial(get_user, auth), methods=["GET"]),
        Route("/api/auth/sessions", partial(create_session, auth), methods=["POST"]),
        Route("/api/auth/sessions/current", partial(current_session, auth), methods=["GET"]),
        Route("/api/auth/refresh", partial(refresh_session, auth), methods=["POST"]),
        Route("/api/auth/logout", partial(logout, auth), methods=["POST"]),
        Route("/api/auth/profiles/current", partial(update_profile, auth), methods=["PATCH"]),
        Route("/api/auth/profiles/{user_id}", partial(get_profile, auth), methods=["GET"]),
        Route("/api/auth/tokens/anon", partial(anon_token, auth), methods=["POST"]),
        Route("/api/auth/admin/sessions", partial(admin_sign_in, auth), methods=["POST"]),
        Route("/api/auth/admin/sessions/current", partial(admin_current_session, auth), methods=["GET"]),
        Route("/api/auth/admin/refresh", partial(admin_refresh, auth), methods=["POST"]),
        Route("/api/auth/admin/logout", partial(admin_logout, auth), methods=["POST"]),
        *email_routes.routes(auth),
        *oauth_routes.routes(auth),
    ]


def capability(auth: Auth) -> Capability:
    return Capability("auth", routes(auth))
