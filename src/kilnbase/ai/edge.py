"""HTTP plumbing shared by the gateway's two surfaces: the process-wide Gateway, the caller, the body."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import anyio
import orjson
from starlette.requests import Request

from kilnbase.ai.errors import GatewayError
from kilnbase.ai.gateway import Caller, Gateway
from kilnbase.http.errors import ApiError
from kilnbase.http.principal import CredentialKind
from kilnbase.http.request_context import require_credential
from kilnbase.server.runtime import runtime_of

T = TypeVar("T")

#: Gateway (virtual) keys: handed to an agent or an app, scoped to models and limits.
GATEWAY_KEY_PREFIX = "kbk_"


def gateway_of(request: Request) -> Gateway:
    """One Gateway per app (it owns the upstream connection pool, caches and the ledger writer)."""
    gateway: Gateway | None = getattr(request.app.state, "ai_gateway", None)
    if gateway is None:
        runtime = runtime_of(request)
        gateway = Gateway(runtime.settings, runtime.secret_box, lambda: runtime.database)
        request.app.state.ai_gateway = gateway
    return gateway


def _bearer(request: Request) -> str | None:
    api_key = request.headers.get("x-api-key")
    if api_key:
        return api_key.strip()
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


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
    user_id = principal.user_id if principal.kind is CredentialKind.JWT else None
    return Caller(principal=principal.actor, user_id=user_id)


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > 20 * 1024 * 1024:
        raise GatewayError(413, "The request body is larger than 20 MB.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GatewayError(400, "The request body is not valid JSON.") from None


def cache_mode(request: Request) -> str | None:
    value = request.headers.get("x-kilnbase-cache", "").strip().lower()
    return value if value in ("on", "off") else None


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T | None:
    """Run `work`; if the client disconnects first, cancel it (closing the upstream call) and return None."""
    results: list[T] = []
    errors: list[BaseException] = []
    async with anyio.create_task_group() as group:

        async def run() -> None:
            try:
                results.append(await work)
            except Exception as exc:
                errors.append(exc)
            group.cancel_scope.cancel()

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        group.start_soon(run)
        group.start_soon(watch)
    if errors:
        raise errors[0]
    return results[0] if results else None
