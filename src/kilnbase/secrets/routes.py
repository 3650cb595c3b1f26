"""`/api/secrets` (admin): the project's secrets (list metadata, get a value, create, update, soft delete),
and `POST /api/secrets/api-key/rotate` and `POST /api/secrets/anon-key/rotate`: a new key now, the old one
accepted until `gracePeriodHours` (0 to 168) have passed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.capability import Capability
from kilnbase.http.admin_gate import admin_actor, audited_admin_caller
from kilnbase.http.json_body import parse, read_json, read_object
from kilnbase.http.responses import json_response
from kilnbase.keys.project_keys import KeyKind
from kilnbase.secrets.project_key_rotation import KeyRotation
from kilnbase.secrets.project_secrets import ProjectSecrets
from kilnbase.secrets.tools import secrets_tools


class Rotation(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    gracePeriodHours: float = Field(default=24, ge=0, le=168)


class SecretRoutes:
    def __init__(self, rotation: KeyRotation, secrets: ProjectSecrets) -> None:
        self.rotation = rotation
        self.secrets = secrets

    async def list_secrets(self, request: Request) -> Response:
        return json_response({"secrets": await self.secrets.list(admin_actor(request))})

    async def get_secret(self, request: Request) -> Response:
        return json_response(
            await self.secrets.get(audited_admin_caller(request), request.path_params["key"])
        )

    async def create_secret(self, request: Request) -> Response:
        actor = audited_admin_caller(request)
        body = await read_object(request, optional=False)
        secret_id = await self.secrets.create(actor, body)
        message = f"Secret {body['key']} has been created successfully"
        return json_response({"success": True, "message": message, "id": secret_id}, 201)

    async def update_secret(self, request: Request) -> Response:
        key = request.path_params["key"]
        await self.secrets.update(
            audited_admin_caller(request), key, await read_object(request, optional=False)
        )
        return json_response({"success": True, "message": f"Secret {key} has been updated successfully"})

    async def delete_secret(self, request: Request) -> Response:
        key = request.path_params["key"]
        await self.secrets.delete(audited_admin_caller(request), key)
        return json_response({"success": True, "message": f"Secret {key} has been deleted successfully"})

    async def _rotate(self, request: Request, kind: KeyKind, default_grace: float) -> Response:
        actor = admin_actor(request)
        data = await read_json(request, optional=True)
        if isinstance(data, dict) and "gracePeriodHours" not in data:
            data = {**data, "gracePeriodHours": default_grace}
        body = parse(Rotation, data)
        rotated = await self.rotation.rotate(actor, kind, body.gracePeriodHours)
        field = "apiKey" if kind == "api_key" else "anonKey"
        expires = rotated.previous_expires_at.isoformat().replace("+00:00", "Z")
        return json_response(
            {
                "success": True,
                "message": "Key rotated; the previous key stops working when its grace period ends.",
                field: rotated.key,
                "gracePeriodHours": body.gracePeriodHours,
                # InsForge's name, and the one Kilnbase answered with first.
                "oldKeyExpiresAt": expires,
                "previousKeyExpiresAt": expires,
            }
        )

    async def rotate_api_key(self, request: Request) -> Response:
        return await self._rotate(request, "api_key", 24)

    async def rotate_anon_key(self, request: Request) -> Response:
        return await self._rotate(request, "anon_key", 168)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/secrets/api-key/rotate", self.rotate_api_key, methods=["POST"]),
            Route("/api/secrets/anon-key/rotate", self.rotate_anon_key, methods=["POST"]),
            Route("/api/secrets", self.list_secrets, methods=["GET"]),
            Route("/api/secrets", self.create_secret, methods=["POST"]),
            Route("/api/secrets/{key}", self.get_secret, methods=["GET"]),
            Route("/api/secrets/{key}", self.update_secret, methods=["PUT"]),
            Route("/api/secrets/{key}", self.delete_secret, methods=["DELETE"]),
        ]


def capability(rotation: KeyRotation, secrets: ProjectSecrets) -> Capability:
    return Capability(
        "secrets",
        SecretRoutes(rotation, secrets).routes(),
        lifespan=rotation.keys_from_database,
        tools=secrets_tools(rotation, secrets),
    )
