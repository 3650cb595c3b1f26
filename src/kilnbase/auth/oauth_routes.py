"""OAuth under `/api/auth/oauth`: provider configs (admin), the PKCE-style flow for built-in and custom
OpenID Connect providers, and the code exchange. Provider callbacks answer with redirects; everything else
is JSON."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from kilnbase.auth import oauth_configs, oauth_flow
from kilnbase.auth.edge import client_ip, context_of, db_ip, json_response, session_response
from kilnbase.auth.oauth_providers import KNOWN_PROVIDERS
from kilnbase.auth.validation import parse, read_json
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError
from kilnbase.http.rate_limit import enforce
from kilnbase.http.request_context import principal_of, require_admin
from kilnbase.logs import audit
from kilnbase.server.runtime import runtime_of

_PKCE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


async def oauth_providers_public(db: Database) -> tuple[list[str], list[str]]:
    """(built-in providers with a client id, custom OIDC keys), for `/public-config`."""
    async with db.as_owner() as cur:
        await cur.execute(
            "select provider from auth.oauth_configs where client_id is not null order by provider"
        )
        built_in = [r["provider"] for r in await cur.fetchall()]
        await cur.execute("select key from auth.custom_oauth_configs order by key")
        custom = [r["key"] for r in await cur.fetchall()]
    return built_in, custom


# --- configs (admin) --------------------------------------------------------------------------------------


async def _audited(request: Request, action: str, details: dict[str, object]) -> None:
    principal = require_admin(request)
    await audit.record(
        runtime_of(request).database,
        actor=principal.actor,
        action=action,
        module="AUTH",
        details=details,
        ip=db_ip(request),
    )


async def list_configs(request: Request) -> Response:
    require_admin(request)
    async with runtime_of(request).database.as_owner() as cur:
        rows = await oauth_configs.list_built_in(cur)
    return json_response({"data": [oauth_configs.config_json(r) for r in rows], "count": len(rows)})


async def create_config(request: Request) -> Response:
    require_admin(request)
    body = parse(oauth_configs.OAuthConfigCreate, await read_json(request))
    runtime = runtime_of(request)
    async with runtime.database.as_owner() as cur:
        row = await oauth_configs.create_built_in(cur, body, runtime.secret_box)
    await _audited(request, "CREATE_OAUTH_CONFIG", {"provider": body.provider})
    return json_response(oauth_configs.config_json(row))


def _provider_param(request: Request) -> str:
    provider: str = request.path_params["provider"]
    if provider not in KNOWN_PROVIDERS:
        raise ApiError(400, "AUTH_UNSUPPORTED_PROVIDER", f"Unknown OAuth provider {provider!r}.")
    return provider


async def get_config(request: Request) -> Response:
    require_admin(request)
    provider = _provider_param(request)
    async with runtime_of(request).database.as_owner() as cur:
        row = await oauth_configs.get_built_in(cur, provider)
    if row is None:
        raise ApiError(404, "NOT_FOUND", f"{provider} is not configured.")
    return json_response(oauth_configs.config_json(row))


async def update_config(request: Request) -> Response:
    require_admin(request)
    provider = _provider_param(request)
    body = parse(oauth_configs.OAuthConfigFields, await read_json(request))
    runtime = runtime_of(request)
    async with runtime.database.as_owner() as cur:
        row = await oauth_configs.update_built_in(cur, provider, body, runtime.secret_box)
    if row is None:
        raise ApiError(404, "NOT_FOUND", f"{provider} is not configured.")
    await _audited(
        request, "UPDATE_OAUTH_CONFIG", {"provider": provider, "fields": sorted(body.model_fields_set)}
    )
    return json_response(oauth_configs.config_json(row))


async def delete_config(request: Request) -> Response:
    require_admin(request)
    provider = _provider_param(request)
    async with runtime_of(request).database.as_owner() as cur:
        deleted = await oauth_configs.delete_built_in(cur, provider)
    if not deleted:
        raise ApiError(404, "NOT_FOUND", f"{provider} is not configured.")
    await _audited(request, "DELETE_OAUTH_CONFIG", {"provider": provider})
    return json_response({"success": True, "message": f"{provider} configuration deleted"})


async def list_custom(request: Request) -> Response:
    require_admin(request)
    async with runtime_of(request).database.as_owner() as cur:
        rows = await oauth_configs.list_custom(cur)
    return json_response({"data": [oauth_configs.custom_json(r) for r in rows], "count": len(rows)})


async def create_custom(request: Request) -> Response:
    require_admin(request)
    body = parse(oauth_configs.CustomConfigCreate, await read_json(request))
    runtime = runtime_of(request)
    async with runtime.database.as_owner() as cur:
        row = await oauth_configs.create_custom(cur, body, runtime.secret_box)
    await _audited(request, "CREATE_CUSTOM_OAUTH_CONFIG", {"key": body.key})
    return json_response(oauth_configs.custom_json(row))


async def get_custom(request: Request) -> Response:
    require_admin(request)
    async with runtime_of(request).database.as_owner() as cur:
        row = await oauth_configs.get_custom(cur, request.path_params["key"])
    if row is None:
        raise ApiError(404, "NOT_FOUND", "No such custom OAuth provider.")
    return json_response(oauth_configs.custom_json(row))


async def update_custom(request: Request) -> Response:
    require_admin(request)
    key = request.path_params["key"]
    body = parse(oauth_configs.CustomConfigFields, await read_json(request))
    runtime = runtime_of(request)
    async with runtime.database.as_owner() as cur:
        row = await oauth_configs.update_custom(cur, key, body, runtime.secret_box)
    if row is None:
        raise ApiError(404, "NOT_FOUND", "No such custom OAuth provider.")
    await _audited(
        request, "UPDATE_CUSTOM_OAUTH_CONFIG", {"key": key, "fields": sorted(body.model_fields_set)}
    )
    return json_response(oauth_configs.custom_json(row))


async def delete_custom(request: Request) -> Response:
    require_admin(request)
    key = request.path_params["key"]
    async with runtime_of(request).database.as_owner() as cur:
        deleted = await oauth_configs.delete_custom(cur, key)
    if not deleted:
        raise ApiError(404, "NOT_FOUND", "No such custom OAuth provider.")
    await _audited(request, "DELETE_CUSTOM_OAUTH_CONFIG", {"key": key})
    return json_response({"success": True, "message": f"{key} configuration deleted"})


# --- the flow ---------------------------------------------------------------------------------------------


async def _limit(request: Request) -> None:
    runtime = runtime_of(request)
    settings = runtime.auth_settings
    key = f"oauth:{client_ip(request)}"
    await enforce(runtime.rate_limiter, key, settings.sign_in_limit * 2, settings.rate_limit_window_seconds)


async def _start(request: Request, custom: bool) -> Response:
    principal_of(request)
    await _limit(request)
    params = dict(request.query_params)
    redirect_uri = params.get("redirect_uri")
    challenge = params.get("code_challenge", "")
    if not redirect_uri:
        raise ApiError(400, "INVALID_INPUT", "redirect_uri is required.")
    if not _PKCE.match(challenge):
        raise ApiError(
            400, "INVALID_INPUT", "code_challenge must be 43-128 base64url characters (PKCE S256)."
        )
    ctx = context_of(request)
    async with ctx.db.as_owner() as cur:
        if custom:
            provider = await oauth_flow.resolve_custom(ctx, cur, request.path_params["key"])
        else:
            provider = await oauth_flow.resolve_built_in(ctx, cur, request.path_params["provider"])
    auth_url = await oauth_flow.start(ctx, provider, redirect_uri, challenge, params)
    return json_response({"authUrl": auth_url})


async def start_built_in(request: Request) -> Response:
    return await _start(request, custom=False)


async def start_custom(request: Request) -> Response:
    return await _start(request, custom=True)


async def _callback(request: Request, custom: bool) -> Response:
    await _limit(request)
    params = {k: v for k, v in request.query_params.items()}
    if request.method == "POST":
        form = await request.form()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    ctx = context_of(request)
    async with ctx.db.as_owner() as cur:
        if custom:
            provider = await oauth_flow.resolve_custom(ctx, cur, request.path_params["key"])
        else:
            provider = await oauth_flow.resolve_built_in(ctx, cur, request.path_params["provider"])
    target = await oauth_flow.callback(ctx, provider, params)
    return RedirectResponse(target, status_code=302)


async def callback_built_in(request: Request) -> Response:
    return await _callback(request, custom=False)


async def callback_custom(request: Request) -> Response:
    return await _callback(request, custom=True)


class CodeExchange(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    code: str = Field(min_length=1, max_length=512)
    code_verifier: str = Field(pattern=r"^[A-Za-z0-9._~-]{43,128}$")


async def exchange(request: Request) -> Response:
    principal_of(request)
    await _limit(request)
    body = parse(CodeExchange, await read_json(request))
    ctx = context_of(request)
    result = await oauth_flow.exchange(ctx, body.code, body.code_verifier)
    return session_response(request, result, ctx.client_type)


class IdTokenSignIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    provider: str = Field(pattern=r"^(google|apple)$")
    token: str = Field(min_length=1, max_length=16384)
    nonce: str | None = Field(None, max_length=512)
    name: str | None = Field(None, max_length=100)


async def id_token(request: Request) -> Response:
    principal_of(request)
    runtime = runtime_of(request)
    settings = runtime.auth_settings
    key = f"id-token:{client_ip(request)}"
    await enforce(runtime.rate_limiter, key, settings.id_token_limit, settings.rate_limit_window_seconds)
    body = parse(IdTokenSignIn, await read_json(request))
    ctx = context_of(request)
    result = await oauth_flow.id_token_sign_in(ctx, body.provider, body.token, body.nonce, body.name)
    return session_response(request, result, ctx.client_type)


routes: list[BaseRoute] = [
    Route("/api/auth/id-token", id_token, methods=["POST"]),
    Route("/api/auth/oauth/configs", list_configs, methods=["GET"]),
    Route("/api/auth/oauth/configs", create_config, methods=["POST"]),
    Route("/api/auth/oauth/exchange", exchange, methods=["POST"]),
    Route("/api/auth/oauth/custom/configs", list_custom, methods=["GET"]),
    Route("/api/auth/oauth/custom/configs", create_custom, methods=["POST"]),
    Route("/api/auth/oauth/custom/{key}/config", get_custom, methods=["GET"]),
    Route("/api/auth/oauth/custom/{key}/config", update_custom, methods=["PUT"]),
    Route("/api/auth/oauth/custom/{key}/config", delete_custom, methods=["DELETE"]),
    Route("/api/auth/oauth/custom/{key}/callback", callback_custom, methods=["GET", "POST"]),
    Route("/api/auth/oauth/custom/{key}", start_custom, methods=["GET"]),
    Route("/api/auth/oauth/{provider}/config", get_config, methods=["GET"]),
    Route("/api/auth/oauth/{provider}/config", update_config, methods=["PUT"]),
    Route("/api/auth/oauth/{provider}/config", delete_config, methods=["DELETE"]),
    Route("/api/auth/oauth/{provider}/callback", callback_built_in, methods=["GET", "POST"]),
    Route("/api/auth/oauth/{provider}", start_built_in, methods=["GET"]),
]
