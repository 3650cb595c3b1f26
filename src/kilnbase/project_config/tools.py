"""The project config's MCP tools: `get-config` and `apply-config` (with `dry_run` to see the plan first),
the same `ProjectConfig` calls as `/api/config`. Agent keys reach them by the scopes of the sections a call
reads or changes (`auth:*`, `storage:*`), not by a `config` group of their own: a key that may read either
section sees both tools, and the service checks each call's sections.

No call waits for a person's approval: the plan is there to read first (`dry_run`), pruning deletes only
empty buckets, and every change is audited by the service that makes it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from kilnbase.capability import Tool
from kilnbase.identity.actor import Actor
from kilnbase.project_config.service import SECTIONS, ApplyRequest, ProjectConfig

APPLY_CONFIG = (
    "Apply a project config, as POST /api/config/apply: {auth?: {enable_signup?, additional_redirect_urls?, "
    "jwt_expiry? (only the server's own)}, storage?: {buckets?: {<name>: {public?}}}}. Returns the plan "
    "(changes, summary) and whether it was applied. dry_run: plan only, nothing changes. prune: delete live "
    "buckets the config does not list (only empty ones; a bucket holding objects refuses the apply). "
    "All or nothing."
)


def config_tools(project_config: ProjectConfig) -> list[Tool]:
    async def get_config(actor: Actor) -> dict[str, Any]:
        return {"config": await project_config.read(actor)}

    async def apply_config(
        actor: Actor,
        config: Annotated[dict[str, Any], Field(description="The project config, as get-config shows it")],
        dry_run: Annotated[bool, Field(description="Only plan: change nothing")] = False,
        prune: Annotated[
            bool, Field(description="Delete live (empty) buckets the config leaves out")
        ] = False,
    ) -> dict[str, Any]:
        return await project_config.apply(actor, ApplyRequest(config, dry_run, prune))

    return [
        Tool(
            "get-config",
            "The project's config (auth settings, storage buckets) in insforge.toml's shape.",
            get_config,
            reached_by=SECTIONS,
        ),
        Tool("apply-config", APPLY_CONFIG, apply_config, read_only=False, reached_by=SECTIONS),
    ]
