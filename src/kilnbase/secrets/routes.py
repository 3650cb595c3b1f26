"""`POST /api/secrets/api-key/rotate` and `POST /api/secrets/anon-key/rotate` (admin): a new key now, the old
one accepted until `gracePeriodHours` (0 to 168) have passed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.auth.edge import db_ip, json_response
from kilnbase.auth.validation import parse, read_json
from kilnbase.http.errors import ApiError
from kilnbase.http.request_context import require_admin
from kilnbase.logs import audit
from kilnbase.secrets import project_key_rotation
from kilnbase.server.project_keys import KeyKind
from kilnbase.server.runtime import runtime_of


class Rotation(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    gracePeriodHours: float = Field(default=24, ge=0, le=168)


async def _rotate(request: Request, kind: KeyKind, default_grace: float) -> Response:
    principal = require_admin(request)
    data = await read_json(request, optional=True)
    if isinstance(data, dict) and "gracePeriodHours" not in data:
        data = {**data, "gracePeriodHours": default_grace}
    body = parse(Rotation, data)
    runtime = runtime_of(request)
    pinned = runtime.settings.access_api_key if kind == "api_key" else runtime.settings.access_anon_key
    if pinned:
        variable = "ACCESS_API_KEY" if kind == "api_key" else "ACCESS_ANON_KEY"
        raise ApiError(
            409,
            "FORBIDDEN",
            f"This key is set by {variable}; rotating it here would be undone at the next start.",
            f"Change {variable} in the environment and restart, or unset it to rotate through the API.",
        )
    new_key, expires_at = await project_key_rotation.rotate(
        runtime.database, runtime.secret_box, runtime.keys.ring, kind, body.gracePeriodHours
    )
    await audit.record(
        runtime.database,
        actor=principal.actor,
        action="ROTATE_API_KEY" if kind == "api_key" else "ROTATE_ANON_KEY",
        module="SECRETS",
        details={"gracePeriodHours": body.gracePeriodHours},
        ip=db_ip(request),
    )
    field = "apiKey" if kind == "api_key" else "anonKey"
    return json_response(
        {
            "success": True,
            "message": "Key rotated; the previous key stops working when its grace period ends.",
            field: new_key,
            "gracePeriodHours": body.gracePeriodHours,
            "previousKeyExpiresAt": expires_at.isoformat().replace("+00:00", "Z"),
        }
    )


async def rotate_api_key(request: Request) -> Response:
    return await _rotate(request, "api_key", 24)


async def rotate_anon_key(request: Request) -> Response:
    return await _rotate(request, "anon_key", 168)


routes: list[BaseRoute] = [
    Route("/api/secrets/api-key/rotate", rotate_api_key, methods=["POST"]),
    Route("/api/secrets/anon-key/rotate", rotate_anon_key, methods=["POST"]),
]
