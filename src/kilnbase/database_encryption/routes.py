"""`/api/database/encryption`: InsForge's list of encrypted columns and its rotation (admin only). Agent keys
reach these routes as the `database` feature group: the list with `database:read`; rotation is refused to
them whatever their scopes (`service.py` says why). A column is made encrypted where tables are made
(`encrypted: true` on a column of `POST /api/database/tables` or of `addColumns`), and an existing column
with its values is encrypted by `POST /api/database/tables/:t/encrypt-column` (refused to agent keys too)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.capability import Capability
from kilnbase.database_encryption.service import ColumnEncryption
from kilnbase.database_encryption.tools import encryption_tools
from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.json_body import read_object
from kilnbase.http.responses import json_response

PREFIX = "/api/database/encryption"


class EncryptionRoutes:
    def __init__(self, encryption: ColumnEncryption) -> None:
        self.encryption = encryption

    async def list_columns(self, request: Request) -> Response:
        return json_response(await self.encryption.list(admin_actor(request)))

    async def rotate(self, request: Request) -> Response:
        return json_response(await self.encryption.rotate(admin_actor(request)))

    async def encrypt_column(self, request: Request) -> Response:
        actor = admin_actor(request)
        body = await read_object(request)
        return json_response(
            await self.encryption.encrypt_existing(actor, request.path_params["table"], body)
        )

    def routes(self) -> list[BaseRoute]:
        return [
            Route(PREFIX, self.list_columns, methods=["GET"]),
            Route(PREFIX + "/rotate", self.rotate, methods=["POST"]),
            Route("/api/database/tables/{table}/encrypt-column", self.encrypt_column, methods=["POST"]),
        ]


def capability(encryption: ColumnEncryption) -> Capability:
    """Named `database`: agent keys' scopes reach encryption as part of the database."""
    return Capability("database", EncryptionRoutes(encryption).routes(), tools=encryption_tools(encryption))
