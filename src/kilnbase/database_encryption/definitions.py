"""The answers of `/api/database/encryption` in InsForge's shapes: the registry's rows as they are named in
`system.encrypted_columns` (snake_case, as InsForge returns its query's rows), and the rotation's summary."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kilnbase.http.errors import ApiError

MODULE = "DATABASE"
ROTATE_ACTION = "ROTATE_ENCRYPTION_KEY"
ENCRYPT_ACTION = "ENCRYPT_COLUMN"
NOTHING_TO_ROTATE = "No encrypted columns found — nothing to rotate"


def column_of(body: dict[str, Any]) -> str:
    """The `column` of an `encrypt-column` body (InsForge's `{column: string, min 1}`)."""
    column = body.get("column")
    if not isinstance(column, str) or not column:
        raise ApiError(
            400,
            "INVALID_INPUT",
            "Column name is required",
            'Send {"column": "<name>"}, the column of the table to encrypt.',
        )
    return column


def listed_column(row: dict[str, Any]) -> dict[str, Any]:
    created: datetime = row["created_at"]
    return {
        "id": str(row["id"]),
        "table_schema": row["table_schema"],
        "table_name": row["table_name"],
        "column_name": row["column_name"],
        "original_type": row["original_type"],
        "key_version": row["key_version"],
        "created_at": created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


def rotation_summary(details: list[dict[str, Any]]) -> dict[str, Any]:
    if not details:
        return {"success": True, "message": NOTHING_TO_ROTATE, "totalReEncrypted": 0}
    total = sum(entry["rowsReEncrypted"] for entry in details)
    return {
        "success": True,
        "message": f"Re-encrypted {total} rows across {len(details)} columns",
        "totalReEncrypted": total,
        "details": details,
    }
