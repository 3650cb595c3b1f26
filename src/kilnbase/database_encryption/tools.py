"""The encryption MCP tool: the list of encrypted columns (`database:read`), the same call as
`GET /api/database/encryption`. Rotation has no tool: an agent key may not rotate (`service.py`)."""

from __future__ import annotations

from typing import Any

from kilnbase.capability import Tool
from kilnbase.database_encryption.service import ColumnEncryption
from kilnbase.identity.actor import Actor


def encryption_tools(encryption: ColumnEncryption) -> list[Tool]:
    async def list_encrypted_columns(actor: Actor) -> dict[str, Any]:
        return await encryption.list(actor)

    return [
        Tool(
            "list-encrypted-columns",
            "List the encrypted columns of the app's tables (schema, table, column, declared type, key "
            "version). Their values are encrypted by the records API and cannot be filtered or ordered on.",
            list_encrypted_columns,
        ),
    ]
