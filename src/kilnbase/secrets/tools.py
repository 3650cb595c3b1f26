"""The project keys and secrets an agent may need: the anon key, which apps embed (InsForge's
`get-anon-key`), and the project secrets functions read (names and metadata only: no tool returns a value).
The value a tool sets is named `secretValue`, so the MCP audit entry masks it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from kilnbase.capability import Tool
from kilnbase.http.errors import require_admin_actor
from kilnbase.identity.actor import Actor
from kilnbase.secrets.project_key_rotation import KeyRotation
from kilnbase.secrets.project_secrets import ProjectSecrets

SecretKey = Annotated[
    str,
    Field(
        description="Upper-case letters, digits and underscores, e.g. STRIPE_KEY",
        min_length=1,
        max_length=255,
    ),
]


def secrets_tools(rotation: KeyRotation, secrets: ProjectSecrets) -> list[Tool]:
    async def get_anon_key(actor: Actor) -> dict[str, Any]:
        require_admin_actor(actor)
        return {"anonKey": rotation.current_anon_key()}

    async def list_secrets(actor: Actor) -> dict[str, Any]:
        return {"secrets": await secrets.list(actor)}

    async def create_secret(
        actor: Actor,
        key: SecretKey,
        secretValue: Annotated[str, Field(description="The value", min_length=1, max_length=65536)],
        expiresAt: Annotated[str | None, Field(description="ISO 8601 time it stops being served")] = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"key": key, "value": secretValue}
        if expiresAt is not None:
            body["expiresAt"] = expiresAt
        secret_id = await secrets.create(actor, body)
        return {"success": True, "message": f"Secret {key} has been created successfully", "id": secret_id}

    async def delete_secret(actor: Actor, key: SecretKey) -> dict[str, Any]:
        await secrets.delete(actor, key)
        return {"success": True, "message": f"Secret {key} has been deleted successfully"}

    return [
        Tool(
            "get-anon-key",
            "The anon key that client apps use (safe to embed; RLS guards data).",
            get_anon_key,
        ),
        Tool("list-secrets", "The project secrets' names and metadata (never their values).", list_secrets),
        Tool(
            "create-secret", "Create a project secret that functions read (Deno.env).", create_secret, False
        ),
        Tool(
            "delete-secret",
            "Delete a project secret: functions stop seeing it.",
            delete_secret,
            read_only=False,
            needs_approval=lambda arguments: f"deletes secret {arguments.get('key')}",
        ),
    ]
