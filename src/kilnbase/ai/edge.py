"""HTTP plumbing shared by the gateway's two surfaces: the process-wide Gateway, the caller, the body."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.types import Receive

from kilnbase.ai.caller import Caller
from kilnbase.ai.errors import GatewayError
from kilnbase.ai.gateway import Gateway
from kilnbase.http.errors import ApiError
from kilnbase.http.principal import CredentialKind
from kilnbase.http.request_context import require_credential
from kilnbase.server.runtime import runtime_of

T = TypeVar("T")

#: Gateway (virtual) keys: handed to an agent or an app, scoped to models and limits.
GATEWAY_KEY_PREFIX = "kbk_"


def gateway_of(request: Request) -> Gateway:
    """The app's one Gateway (it owns the upstream connection pool, caches and the ledger writer), made by
    `ai.routes.startup` in the lifespan."""
    gateway: Gateway = request.app.state.ai_gateway
    return gateway


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


async def caller_of(request: Request) -> Caller:
    """A gateway key, or any credential the rest of the API accepts (API key, anon key, user token)."""
    token = _bearer(request)
    if token and token.startswith(GATEWAY_KEY_PREFIX):
        gateway = gateway_of(request)
        key = await gateway.policy.gateway_key(runtime_of(request).database, token)
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
    try:
        principal = require_credential(request)
    except ApiError as exc:
        raise GatewayError(401, exc.message, type_="authentication_error", code="invalid_api_key") from None
    if principal.db_role == "anon":
        return Caller(principal=principal.actor, anonymous=True, client_address=client_address(request))
    user_id = principal.user_id if principal.kind is CredentialKind.JWT else None
    return Caller(principal=principal.actor, user_id=user_id)


def client_address(request: Request) -> str | None:
    """The caller's address, for anon limits and the audit trail. The one place the gateway reads it, so
    that it follows the server's rule for trusted proxies when that rule moves into `http/`."""
    return request.client.host if request.client else None


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > 20 * 1024 * 1024:
        raise GatewayError(413, "The request body is larger than 20 MB.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GatewayError(400, "The request body is not valid JSON.") from None


def cache_mode(request: Request) -> str | None:
    """`x-kilnbase-cache`: "off" keeps this request out of the cache; only the policy turns caching on."""
    value = request.headers.get("x-kilnbase-cache", "").strip().lower()
    return value if value in ("on", "off") else None


async def unless_client_leaves(receive: Receive, work: Awaitable[T]) -> T | None:
    """Run `work` in this task; if the client disconnects first, cancel it (closing the upstream call) and
    return None. One watcher task per call, instead of a task group around two (this is on every request)."""
    task = asyncio.current_task()
    assert task is not None
    left = False

    async def watch() -> None:
        nonlocal left
        while (await receive())["type"] != "http.disconnect":
            pass
        left = True
        task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if left:
            task.uncancel()
            return None
        raise
    finally:
        watcher.cancel()
