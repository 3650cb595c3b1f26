"""The project keys and secrets an agent may need: the anon key, which apps embed (InsForge's
`get-anon-key`, and `download-template`, the command that scaffolds InsForge's starter app with it), and the
project secrets functions read (names and metadata only: no tool returns a value). The value a tool sets is
named `secretValue`, so the MCP audit entry masks it."""

from __future__ import annotations

import re
import shlex
from typing import Annotated, Any, Literal

from pydantic import Field

from kilnbase.capability import Tool
from kilnbase.http.errors import ApiError, require_admin_actor
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


#: One directory name, as `@insforge/mcp` takes it: the command is run in the project's parent directory.
_DIRECTORY = re.compile(r"[\w.-]+")


def template_command(frame: str, project_name: str | None, base_url: str, anon_key: str) -> dict[str, str]:
    """What `@insforge/mcp`'s remote `download-template` answers: the `npx create-insforge-app` command for
    the agent to run (the server cannot write to the agent's machine), with this server's URL and anon key.
    A name that is not one directory (`..`, a slash, a space) is refused: the command must not reach
    elsewhere."""
    directory = project_name or f"insforge-{frame}"
    if directory in (".", "..") or not _DIRECTORY.fullmatch(directory):
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"projectName {directory!r} is not one directory name; nothing was done.",
            "Use letters, digits, hyphens, underscores and dots (not . or ..), or leave projectName out.",
        )
    arguments = [directory, "--frame", frame, "--base-url", base_url, "--anon-key", anon_key]
    command = shlex.join(["npx", "create-insforge-app", *arguments])
    message = (
        "Template configuration ready. Run this in your project's parent directory:\n\n"
        f"```bash\n{command}\n```\n\nAfter the command completes, `cd {shlex.quote(directory)}` and start "
        "developing."
    )
    return {"message": message, "command": command, "directory": directory}


def secrets_tools(rotation: KeyRotation, secrets: ProjectSecrets) -> list[Tool]:
    async def get_anon_key(actor: Actor) -> dict[str, Any]:
        require_admin_actor(actor)
        return {"anonKey": rotation.current_anon_key()}

    async def download_template(
        actor: Actor,
        frame: Annotated[Literal["react", "nextjs"], Field(description="The starter app's framework")],
        projectName: Annotated[
            str | None,
            Field(description="Its directory (default insforge-<frame>)", min_length=1, max_length=100),
        ] = None,
    ) -> dict[str, str]:
        require_admin_actor(actor)
        return template_command(frame, projectName, rotation.base_url, rotation.current_anon_key())

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
        Tool(
            "download-template",
            "Start a new app: the npx create-insforge-app command (React or Next.js) that scaffolds "
            "InsForge's starter app wired to this server's URL and anon key, for you to run locally.",
            download_template,
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
