"""OAuth under `/api/auth/oauth`: provider configs (admin), the PKCE-style flow for built-in and custom
OpenID Connect providers, the code exchange, and native ID-token sign-in. Provider callbacks answer with
redirects; everything else is JSON. Handlers parse the request, call the service (`OAuthSignIn`,
`AuthAdmin`), and shape the answer."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from kilnbase.auth.edge import SessionEdge, client_type_of, public_actor
from kilnbase.auth.oauth_configs import (
    CustomConfigCreate,
    CustomConfigFields,
    OAuthConfigCreate,
    OAuthConfigFields,
)
from kilnbase.auth.oauth_flow import CodeExchange, IdTokenSignIn
from kilnbase.auth.services import Auth
from kilnbase.auth.validation import read_body
from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.responses import json_response


def _listed(rows: list[dict[str, object]]) -> Response:
    return json_response({"data": rows, "count": len(rows)})


def _deleted(name: str) -> Response:
    return json_response({"success": True, "message": f"{name} configuration deleted"})


class OAuthRoutes:
    def __init__(self, auth: Auth) -> None:
        self.flow = auth.oauth
        self.admin = auth.admin
        self.edge = SessionEdge(auth.parts)

    # --- configs (admin) -----------------------------------------------------------------------------------

    async def list_configs(self, request: Request) -> Response:
        return _listed(await self.admin.list_oauth_configs(admin_actor(request)))

    async def create_config(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(
            await self.admin.create_oauth_config(actor, await read_body(request, OAuthConfigCreate))
        )

    async def get_config(self, request: Request) -> Response:
        return json_response(
            await self.admin.oauth_config(admin_actor(request), request.path_params["provider"])
        )

    async def update_config(self, request: Request) -> Response:
        actor = admin_actor(request)
        body = await read_body(request, OAuthConfigFields)
        return json_response(
            await self.admin.update_oauth_config(actor, request.path_params["provider"], body)
        )

    async def delete_config(self, request: Request) -> Response:
        provider = request.path_params["provider"]
        await self.admin.delete_oauth_config(admin_actor(request), provider)
        return _deleted(provider)

    async def list_custom(self, request: Request) -> Response:
        return _listed(await self.admin.list_custom_oauth_configs(admin_actor(request)))

    async def create_custom(self, request: Request) -> Response:
        actor = admin_actor(request)
        body = await read_body(request, CustomConfigCreate)
        return json_response(await self.admin.create_custom_oauth_config(actor, body))

    async def get_custom(self, request: Request) -> Response:
        return json_response(
            await self.admin.custom_oauth_config(admin_actor(request), request.path_params["key"])
        )

    async def update_custom(self, request: Request) -> Response:
        actor = admin_actor(request)
        body = await read_body(request, CustomConfigFields)
        return json_response(
            await self.admin.update_custom_oauth_config(actor, request.path_params["key"], body)
        )

    async def delete_custom(self, request: Request) -> Response:
        key = request.path_params["key"]
        await self.admin.delete_custom_oauth_config(admin_actor(request), key)
        return _deleted(key)

    # --- the flow ------------------------------------------------------------------------------------------

    async def _start(self, request: Request, *, custom: bool) -> Response:
        actor = public_actor(request)
        key = request.path_params["key" if custom else "provider"]
        url = await self.flow.start(actor, key, dict(request.query_params), custom=custom)
        return json_response({"authUrl": url})

    async def start_built_in(self, request: Request) -> Response:
        return await self._start(request, custom=False)

    async def start_custom(self, request: Request) -> Response:
        return await self._start(request, custom=True)

    async def _callback(self, request: Request, *, custom: bool) -> Response:
        params = dict(request.query_params)
        if request.method == "POST":  # Apple's form_post
            form = await request.form()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        key = request.path_params["key" if custom else "provider"]
        target = await self.flow.callback(public_actor(request), key, params, custom=custom)
        return RedirectResponse(target, status_code=302)

    async def callback_built_in(self, request: Request) -> Response:
        return await self._callback(request, custom=False)

    async def callback_custom(self, request: Request) -> Response:
        return await self._callback(request, custom=True)

    async def exchange(self, request: Request) -> Response:
        actor = public_actor(request)
        client_type = client_type_of(request)
        result = await self.flow.exchange(actor, await read_body(request, CodeExchange), client_type)
        return self.edge.response(request, result, client_type)

    async def id_token(self, request: Request) -> Response:
        actor = public_actor(request)
        client_type = client_type_of(request)
        result = await self.flow.id_token_sign_in(actor, await read_body(request, IdTokenSignIn), client_type)
        return self.edge.response(request, result, client_type)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/auth/id-token", self.id_token, methods=["POST"]),
            Route("/api/auth/oauth/configs", self.list_configs, methods=["GET"]),
            Route("/api/auth/oauth/configs", self.create_config, methods=["POST"]),
            Route("/api/auth/oauth/exchange", self.exchange, methods=["POST"]),
            Route("/api/auth/oauth/custom/configs", self.list_custom, methods=["GET"]),
            Route("/api/auth/oauth/custom/configs", self.create_custom, methods=["POST"]),
            Route("/api/auth/oauth/custom/{key}/config", self.get_custom, methods=["GET"]),
            Route("/api/auth/oauth/custom/{key}/config", self.update_custom, methods=["PUT"]),
            Route("/api/auth/oauth/custom/{key}/config", self.delete_custom, methods=["DELETE"]),
            Route("/api/auth/oauth/custom/{key}/callback", self.callback_custom, methods=["GET", "POST"]),
            Route("/api/auth/oauth/custom/{key}", self.start_custom, methods=["GET"]),
            Route("/api/auth/oauth/{provider}/config", self.get_config, methods=["GET"]),
            Route("/api/auth/oauth/{provider}/config", self.update_config, methods=["PUT"]),
            Route("/api/auth/oauth/{provider}/config", self.delete_config, methods=["DELETE"]),
            Route("/api/auth/oauth/{provider}/callback", self.callback_built_in, methods=["GET", "POST"]),
            Route("/api/auth/oauth/{provider}", self.start_built_in, methods=["GET"]),
        ]
