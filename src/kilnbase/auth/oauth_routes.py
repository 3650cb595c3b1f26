"""OAuth under `/api/auth/oauth`: provider configs (admin), the PKCE-style flow for built-in and custom
OpenID Connect providers, and the code exchange. Provider callbacks answer with redirects; everything else
is JSON."""

from __future__ import annotations

import re
from functools import partial

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from kilnbase import audit
from kilnbase.auth import oauth_configs, oauth_flow
from kilnbase.auth.edge import context_of, session_response
from kilnbase.auth.oauth_providers import KNOWN_PROVIDERS
from kilnbase.auth.services import Auth
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import parse, read_json
from kilnbase.http.rate_limit import enforce
from kilnbase.http.request_context import admin_actor, client_ip, principal_of, require_admin
from kilnbase.http.responses import json_response

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


async def _audited(auth: Auth, request: Request, action: str, details: dict[str, object]) -> None:
    await audit.record(auth.database, admin_actor(request), action, "AUTH", details)


async def list_configs(auth: Auth, request: Request) -> Response:
    require_admin(request)
    async with auth.database.as_owner() as cur:
        rows = await oauth_configs.list_built_in(cur)
    return json_response({"data": [oauth_configs.config_json(r) for r in rows], "count": len(rows)})


async def create_config(auth: Auth, request: Request) -> Response:
    require_admin(request)
    body = parse(oauth_configs.OAuthConfigCreate, await read_json(request))
    async with auth.database.as_owner() as cur:
        row = await oauth_configs.create_built_in(cur, body, auth.secret_box)
    await _audited(auth, request, "CREATE_OAUTH_CONFIG", {"provider": body.provider})
    return json_response(oauth_configs.config_json(row))


def _provider_param(request: Request) -> str:
    provider: str = request.path_params["provider"]
    if provider not in KNOWN_PROVIDERS:
        raise ApiError(400, "AUTH_UNSUPPORTED_PROVIDER", f"Unknown OAuth provider {provider!r}.")
    return provider


async def get_config(auth: Auth, request: Request) -> Response:
    require_admin(request)
    provider = _provider_param(request)
    async with auth.database.as_owner() as cur:
        row = await oauth_configs.get_built_in(cur, provider)
    if row is None:
        raise ApiError(404, "NOT_FOUND", f"{provider} is not configured.")
    return json_response(oauth_configs.config_json(row))


async def update_config(auth: Auth, request: Request) -> Response:
    require_admin(request)
    provider = _provider_param(request)
    body = parse(oauth_configs.OAuthConfigFields, await read_json(request))
    async with auth.database.as_owner() as cur:
        row = await oauth_configs.update_built_in(cur, provider, body, auth.secret_box)
    if row is None:
        raise ApiError(404, "NOT_FOUND", f"{provider} is not configured.")
    await _audited(
        auth, request, "UPDATE_OAUTH_CONFIG", {"provider": provider, "fields": sorted(body.model_fields_set)}
    )
    return json_response(oauth_configs.config_json(row))


async def delete_config(auth: Auth, request: Request) -> Response:
    require_admin(request)
    provider = _provider_param(request)
    async with auth.database.as_owner() as cur:
        deleted = await oauth_configs.delete_built_in(cur, provider)
    if not deleted:
        raise ApiError(404, "NOT_FOUND", f"{provider} is not configured.")
    await _audited(auth, request, "DELETE_OAUTH_CONFIG", {"provider": provider})
    return json_response({"success": True, "message": f"{provider} configuration deleted"})


async def list_custom(auth: Auth, request: Request) -> Response:
    require_admin(request)
    async with auth.database.as_owner() as cur:
        rows = await oauth_configs.list_custom(cur)
    return json_response({"data": [oauth_configs.custom_json(r) for r in rows], "count": len(rows)})


async def create_custom(auth: Auth, request: Request) -> Response:
    require_admin(request)
    body = parse(oauth_configs.CustomConfigCreate, await read_json(request))
    async with auth.database.as_owner() as cur:
        row = await oauth_configs.create_custom(cur, body, auth.secret_box)
    await _audited(auth, request, "CREATE_CUSTOM_OAUTH_CONFIG", {"key": body.key})
    return json_response(oauth_configs.custom_json(row))


async def get_custom(auth: Auth, request: Request) -> Response:
    require_admin(request)
    async with auth.database.as_owner() as cur:
        row = await oauth_configs.get_custom(cur, request.path_params["key"])
    if row is None:
        raise ApiError(404, "NOT_FOUND", "No such custom OAuth provider.")
    return json_response(oauth_configs.custom_json(row))


async def update_custom(auth: Auth, request: Request) -> Response:
    require_admin(request)
    key = request.path_params["key"]
    body = parse(oauth_configs.CustomConfigFields, await read_json(request))
    async with auth.database.as_owner() as cur:
        row = await oauth_configs.update_custom(cur, key, body, auth.secret_box)
    if row is None:
        raise ApiError(404, "NOT_FOUND", "No such custom OAuth provider.")
    await _audited(
        auth, request, "UPDATE_CUSTOM_OAUTH_CONFIG", {"key": key, "fields": sorted(body.model_fields_set)}
    )
    return json_response(oauth_configs.custom_json(row))


async def delete_custom(auth: Auth, request: Request) -> Response:
    require_admin(request)
    key = request.path_params["key"]
    async with auth.database.as_owner() as cur:
        deleted = await oauth_configs.delete_custom(cur, key)
    if not deleted:
        raise ApiError(404, "NOT_FOUND", "No such custom OAuth provider.")
    await _audited(auth, request, "DELETE_CUSTOM_OAUTH_CONFIG", {"key": key})
    return json_response({"success": True, "message": f"{key} configuration deleted"})


# --- the flow ---------------------------------------------------------------------------------------------


async def _limit(auth: Auth, request: Request) -> None:
    settings = auth.services.settings
    key = f"oauth:{client_ip(request)}"
    await enforce(auth.rate_limiter, key, settings.sign_in_limit * 2, settings.rate_limit_window_seconds)


async def _start(auth: Auth, request: Request, custom: bool) -> Response:
    principal_of(request)
    await _limit(auth, request)
    params = dict(request.query_params)
    redirect_uri = params.get("redirect_uri")
    challenge = params.get("code_challenge", "")
    if not redirect_uri:
        raise ApiError(400, "INVALID_INPUT", "redirect_uri is required.")
    if not _PKCE.match(challenge):
        raise ApiError(
            400, "INVALID_INPUT", "code_challenge must be 43-128 base64url characters (PKCE S256)."
        )
    ctx = context_of(auth, request)
    async with ctx.db.as_owner() as cur:
        if custom:
            provider = await oauth_flow.resolve_custom(ctx, cur, request.path_params["key"])
        else:
            provider = await oauth_flow.resolve_built_in(ctx, cur, request.path_params["provider"])
    auth_url = await oauth_flow.start(ctx, provider, redirect_uri, challenge, params)
    return json_response({"authUrl": auth_url})


async def start_built_in(auth: Auth, request: Request) -> Response:
    return await _start(auth, request, custom=False)


async def start_custom(auth: Auth, request: Request) -> Response:
    return await _start(auth, request, custom=True)


async def _callback(auth: Auth, request: Request, custom: bool) -> Response:
    await _limit(auth, request)
    params = {k: v for k, v in request.query_params.items()}
    if request.method == "POST":
        form = await request.form()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    ctx = context_of(auth, request)
    async with ctx.db.as_owner() as cur:
        if custom:
            provider = await oauth_flow.resolve_custom(ctx, cur, request.path_params["key"])
        else:
            provider = await oauth_flow.resolve_built_in(ctx, cur, request.path_params["provider"])
    target = await oauth_flow.callback(ctx, provider, params)
    return RedirectResponse(target, status_code=302)


async def callback_built_in(auth: Auth, request: Request) -> Response:
    return await _callback(auth, request, custom=False)


async def callback_custom(auth: Auth, request: Request) -> Response:
    return await _callback(auth, request, custom=True)


class CodeExchange(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    code: str = Field(min_length=1, max_length=512)
    code_verifier: str = Field(pattern=r"^[A-Za-z0-9._~-]{43,128}$")


async def exchange(auth: Auth, request: Request) -> Response:
    principal_of(request)
    await _limit(auth, request)
    body = parse(CodeExchange, await read_json(request))
    ctx = context_of(auth, request)
    result = await oauth_flow.exchange(ctx, body.code, body.code_verifier)
    return session_response(auth, request, result, ctx.client_type)


class IdTokenSignIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    provider: str = Field(pattern=r"^(google|apple)$")
    token: str = Field(min_length=1, max_length=16384)
    nonce: str | None = Field(None, max_length=512)
    name: str | None = Field(None, max_length=100)


async def id_token(auth: Auth, request: Request) -> Response:
    principal_of(request)
    settings = auth.services.settings
    key = f"id-token:{client_ip(request)}"
    await enforce(auth.rate_limiter, key, settings.id_token_limit, settings.rate_limit_window_seconds)
    body = parse(IdTokenSignIn, await read_json(request))
    ctx = context_of(auth, request)
    result = await oauth_flow.id_token_sign_in(ctx, body.provider, body.token, body.nonce, body.name)
    return session_response(auth, request, result, ctx.client_type)


def routes(auth: Auth) -> list[BaseRoute]:
    return [
        Route("/api/auth/id-token", partial(id_token, auth), methods=["POST"]),
        Route("/api/auth/oauth/configs", partial(list_configs, auth), methods=["GET"]),
        Route("/api/auth/oauth/configs", partial(create_config, auth), methods=["POST"]),
        Route("/api/auth/oauth/exchange", partial(exchange, auth), methods=["POST"]),
        Route("/api/auth/oauth/custom/configs", partial(list_custom, auth), methods=["GET"]),
        Route("/api/auth/oauth/custom/configs", partial(create_custom, auth), methods=["POST"]),
        Route("/api/auth/oauth/custom/{key}/config", partial(get_custom, auth), methods=["GET"]),
        Route("/api/auth/oauth/custom/{key}/config", partial(update_custom, auth), methods=["PUT"]),
        Route("/api/auth/oauth/custom/{key}/config", partial(delete_custom, auth), methods=["DELETE"]),
        Route(
            "/api/auth/oauth/custom/{key}/callback", partial(callback_custom, auth), methods=["GET", "POST"]
        ),
        Route("/api/auth/oauth/custom/{key}", partial(start_custom, auth), methods=["GET"]),
        Route("/api/auth/oauth/{provider}/config", partial(get_config, auth), methods=["GET"]),
        Route("/api/auth/oauth/{provider}/config", partial(update_config, auth), methods=["PUT"]),
        Route("/api/auth/oauth/{provider}/config", partial(delete_config, auth), methods=["DELETE"]),
        Route(
            "/api/auth/oauth/{provider}/callback", partial(callback_built_in, auth), methods=["GET", "POST"]
        ),
        Route("/api/auth/oauth/{provider}", partial(start_built_in, auth), methods=["GET"]),
    ]
