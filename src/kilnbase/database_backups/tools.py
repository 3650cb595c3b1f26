"""The backups' MCP tools: the same `DatabaseBackups` calls as `/api/database/backups`. Listing reads
(`database:read`); making a backup writes (`database:write`) and loses nothing, so an agent makes one on its
own before a risky change. Restoring replaces the database and deleting loses a backup: an agent's call of
either waits for a person's approval (and the same REST requests are held as these calls)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field

from kilnbase.capability import Tool
from kilnbase.database_backups.definitions import MAX_NAME
from kilnbase.database_backups.service import DatabaseBackups
from kilnbase.identity.actor import Actor

BackupId = Annotated[str, Field(description="The backup's id (a UUID)", min_length=1, max_length=64)]


def _restore_reason(arguments: Mapping[str, Any]) -> str:
    return f"replaces the database with backup {arguments.get('id')}"


def _delete_reason(arguments: Mapping[str, Any]) -> str:
    return f"deletes backup {arguments.get('id')} and its file"


def backups_tools(backups: DatabaseBackups) -> list[Tool]:
    async def list_database_backups(actor: Actor) -> dict[str, Any]:
        return await backups.list(actor)

    async def create_database_backup(
        actor: Actor,
        name: Annotated[str | None, Field(description="A name to find it by", max_length=MAX_NAME)] = None,
    ) -> dict[str, Any]:
        return await backups.create(actor, {} if name is None else {"name": name})

    async def restore_database_backup(actor: Actor, id: BackupId) -> dict[str, Any]:
        await backups.restore(actor, id)
        return {"message": "Database restored successfully"}

    async def delete_database_backup(actor: Actor, id: BackupId) -> dict[str, Any]:
        await backups.delete(actor, id)
        return {"message": "Backup deleted successfully"}

    return [
        Tool(
            "list-database-backups",
            "The database backups, newest first: status (running, completed, failed), size, when.",
            list_database_backups,
        ),
        Tool(
            "create-database-backup",
            "Back the database up now (before a risky change): answers at once with the running backup; "
            "list-database-backups shows it completed.",
            create_database_backup,
            read_only=False,
        ),
        Tool(
            "restore-database-backup",
            "Restore a completed backup in place: tables and rows as they were then (users sign in again).",
            restore_database_backup,
            read_only=False,
            needs_approval=_restore_reason,
        ),
        Tool(
            "delete-database-backup",
            "Delete a backup and its file.",
            delete_database_backup,
            read_only=False,
            needs_approval=_delete_reason,
        ),
    ]
