"""`/api/database/backups`: InsForge's routes, shapes, codes and messages (admin only). A backup answers 201
at once with its `running` row and is made in the background; a restore answers when it is done. Agent keys
reach these routes as the `database` feature group: listing with `database:read`, the rest with
`database:write`, and a restore or a delete by an agent waits for a person's approval (the REST approval
gate holds it as the tool's call)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.capability import Capability
from kilnbase.database_backups.scheduler import ScheduledBackups
from kilnbase.database_backups.service import DatabaseBackups
from kilnbase.database_backups.tools import backups_tools
from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import read_object
from kilnbase.http.responses import json_response

PREFIX = "/api/database/backups"
#: InsForge's newer home for the schedule: the database module's settings, `{backup: {...}}`.
DATABASE_CONFIG = "/api/database/config"


def _backup_section(body: dict[str, Any]) -> dict[str, Any]:
    """The `backup` section of a `PATCH /api/database/config` body, the only one there is."""
    unknown = sorted(set(body) - {"backup"})
    if unknown:
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"Unknown field {unknown[0]!r}.",
            "Send {backup: {enabled?, cronSchedule?, retentionDays?}}.",
        )
    section = body.get("backup")
    if not isinstance(section, dict):
        raise ApiError(
            400,
            "INVALID_INPUT",
            "backup: Required" if section is None else "backup: Expected object",
            "Send {backup: {enabled?, cronSchedule?, retentionDays?}}.",
        )
    return section


class BackupRoutes:
    def __init__(self, backups: DatabaseBackups) -> None:
        self.backups = backups

    async def list_backups(self, request: Request) -> Response:
        return json_response(await self.backups.list(admin_actor(request)))

    async def create_backup(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(await self.backups.create(actor, await read_object(request)), 201)

    async def get_config(self, request: Request) -> Response:
        return json_response(await self.backups.config(admin_actor(request)))

    async def update_config(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(await self.backups.update_config(actor, await read_object(request)))

    async def get_database_config(self, request: Request) -> Response:
        return json_response({"backup": await self.backups.config(admin_actor(request))})

    async def update_database_config(self, request: Request) -> Response:
        actor = admin_actor(request)
        section = _backup_section(await read_object(request))
        backup = await self.backups.update_config(actor, section, action="UPDATE_DATABASE_CONFIG")
        return json_response({"backup": backup})

    async def rename_backup(self, request: Request) -> Response:
        actor = admin_actor(request)
        body = await read_object(request)
        return json_response(await self.backups.rename(actor, request.path_params["id"], body))

    async def delete_backup(self, request: Request) -> Response:
        await self.backups.delete(admin_actor(request), request.path_params["id"])
        return json_response({"message": "Backup deleted successfully"})

    async def restore_backup(self, request: Request) -> Response:
        await self.backups.restore(admin_actor(request), request.path_params["id"])
        return json_response({"message": "Database restored successfully"})

    def routes(self) -> list[BaseRoute]:
        return [
            Route(PREFIX, self.list_backups, methods=["GET"]),
            Route(PREFIX, self.create_backup, methods=["POST"]),
            # Before the `{id}` routes, so that 'config' is never read as a backup id.
            Route(PREFIX + "/config", self.get_config, methods=["GET"]),
            Route(PREFIX + "/config", self.update_config, methods=["PATCH"]),
            Route(PREFIX + "/{id}", self.rename_backup, methods=["PATCH"]),
            Route(PREFIX + "/{id}", self.delete_backup, methods=["DELETE"]),
            Route(PREFIX + "/{id}/restore", self.restore_backup, methods=["POST"]),
            Route(DATABASE_CONFIG, self.get_database_config, methods=["GET"]),
            Route(DATABASE_CONFIG, self.update_database_config, methods=["PATCH"]),
        ]


def capability(backups: DatabaseBackups, scheduler: ScheduledBackups) -> Capability:
    """Named `database`: agent keys' scopes reach backups as part of the database (`database:read`)."""
    return Capability(
        "database",
        BackupRoutes(backups).routes(),
        background=scheduler.running,
        tools=backups_tools(backups),
    )
