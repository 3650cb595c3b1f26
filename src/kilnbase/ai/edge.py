"""HTTP plumbing shared by the gateway's two surfaces: the caller, the body, the cache header."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from kilnbase.ai.caller import Caller, caller_of_principal
from kilnbase.ai.errors import GatewayError, insforge_code, insforge_next_actions, openai_error_body
from kilnbase.ai.service import AiService
from kilnbase.http.errors import ApiError, error_response
from kilnbase.http.request_context import client_ip, require_credential
from kilnbase.http.responses import json_response

#: Gateway (virtual) keys: handed to an agent or an app, scoped to models and limits.
GATEWAY_KEY_PREFIX = "kbk_"


def _bearer(request: Request) -> str | None:
    authorization: str | None = None
    api_key: str | None = None
    for name, value in request.scope["headers"]:  # one pass; Headers() would decode every header
        if name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1")
        elif name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
    if api_key:
        return api_key.strip()
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


async def caller_of(ai: AiService, request: Request) -> Caller:
    """`api_caller_of` for the OpenAI-shaped routes (`/v1`): a refused credential in OpenAI's shape."""
    try:
        return await api_caller_of(ai, request)
    except ApiError as exc:
        raise GatewayError(401, exc.message, type_="authentication_error", code="invalid_api_key") from None


async def api_caller_of(ai: AiService, request: Request) -> Caller:
    """A gateway key, or any credential the rest of the API accepts (API key, anon key, user token), any
    other refused as InsForge's `verifyUser` refuses it (an ApiError: `/api/ai` answers it as such)."""
    token = _bearer(request)
    if token and token.startswith(GATEWAY_KEY_PREFIX):
        key = await ai.gateway.policy.gateway_key(ai.database, token)
        if key is None:
            raise GatewayError(
                401, "Invalid or revoked gateway key.", type_="authentication_error", code="invalid_api_key"
            )
        return Caller(
            principal=f"gateway-key:{key.name}",
            key_id=key.id,
            key_models=key.models,
            key_max_tokens=key.max_tokens,
        )
    return caller_of_principal(require_credential(request), client_address(request))


def client_address(request: Request) -> str | None:
    """The caller's address, which anon callers' limits count by: the server's one rule
    (`http.client_address`, trusted proxies honoured), so a forwarded header cannot reset those limits."""
    return client_ip(request)


async def json_body(request: Request) -> Any:
    """The body as JSON, with OpenAI's error shape for a malformed one (its size was bounded at the edge,
    `KILNBASE_MAX_GATEWAY_BODY_BYTES`)."""
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GatewayError(400, "The request body is not valid JSON.") from None


def cache_mode(request: Request) -> str | None:
    """`x-kilnbase-cache`: "off" keeps this request out of the cache; only the policy turns caching on."""
    value = request.headers.get("x-kilnbase-cache", "").strip().lower()
    return value if value in ("on", "off") else None


RoutesT = TypeVar("RoutesT")
Handler = Callable[[RoutesT, Request], Awaitable[Response]]


def openai_errors(handler: Handler[RoutesT]) -> Handler[RoutesT]:
    """A route method under `/v1` that answers a GatewayError in OpenAI's shape."""

    async def wrapped(self: RoutesT, request: Request) -> Response:
        try:
            return await handler(self, request)
        except GatewayError as exc:
            return json_response(openai_error_body(exc), exc.status, exc.headers)

    return wrapped


def insforge_errors(handler: Handler[RoutesT]) -> Handler[RoutesT]:
    """A route method under `/api/ai` that answers a GatewayError in InsForge's shape."""

    async def wrapped(self: RoutesT, request: Request) -> Response:
        try:
            return await handler(self, request)
        except GatewayError as exc:
            return error_response(
                exc.status, insforge_code(exc), exc.message, insforge_next_actions(exc), headers=exc.headers
            )

    return wrapped
