"""The auth capability's MCP tools: the users and settings an agent needs to read or clean up, through
`AuthAdmin` (admin only, audited by the service)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from kilnbase.auth.services import Auth
from kilnbase.capability import Tool
from kilnbase.identity.actor import Actor


def auth_tools(auth: Auth) -> list[Tool]:
    admin = auth.admin

    async def list_users(
        actor: Actor,
        limit: Annotated[int, Field(ge=1, le=100)] = 20,
        offset: Annotated[int, Field(ge=0)] = 0,
        search: Annotated[str | None, Field(description="Part of an email or a name", max_length=200)] = None,
    ) -> dict[str, Any]:
        return await admin.list_users(actor, limit=limit, offset=offset, search=search)

    async def get_user(actor: Actor, userId: str) -> dict[str, Any]:
        return await admin.user(actor, userId)

    async def delete_users(
        actor: Actor, userIds: Annotated[list[str], Field(min_length=1, max_length=100)]
    ) -> dict[str, Any]:
        return {"deletedCount": await admin.delete_users(actor, userIds)}

    async def get_auth_config(actor: Actor) -> dict[str, Any]:
        return await admin.config(actor)

    return [
        Tool("list-users", "List users (id, email, verified, providers), newest first.", list_users),
        Tool("get-user", "One user by id.", get_user),
        Tool(
            "delete-users",
            "Delete users; their sessions end at once.",
            delete_users,
            read_only=False,
            needs_approval=lambda arguments: (
                f"deletes {len(arguments.get('userIds') or [])} user(s) and their data"
            ),
        ),
        Tool(
            "get-auth-config",
            "Auth settings that change client code: verification, password rules, redirects.",
            get_auth_config,
        ),
    ]
