"""The project keys an agent may need: the anon key, which apps embed (InsForge's `get-anon-key`)."""

from __future__ import annotations

from typing import Any

from kilnbase.capability import Tool
from kilnbase.http.errors import require_admin_actor
from kilnbase.identity.actor import Actor
from kilnbase.secrets.project_key_rotation import KeyRotation


def secrets_tools(rotation: KeyRotation) -> list[Tool]:
    async def get_anon_key(actor: Actor) -> dict[str, Any]:
        require_admin_actor(actor)
        return {"anonKey": rotation.current_anon_key()}

    return [
        Tool(
            "get-anon-key",
            "The anon key that client apps use (safe to embed; RLS guards data).",
            get_anon_key,
        )
    ]
