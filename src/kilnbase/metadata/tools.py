"""The semantic layer as MCP tools of Kilnbase's own MCP server: the backend described for an agent."""

from __future__ import annotations

from typing import Any

import orjson

from kilnbase.capability import McpResource, Tool
from kilnbase.identity.actor import Actor
from kilnbase.metadata.service import MetadataService


def metadata_tools(service: MetadataService) -> list[Tool]:
    async def get_backend_metadata(actor: Actor) -> dict[str, Any]:
        return await service.agent_context(actor)

    async def describe_table(actor: Actor, table: str) -> dict[str, Any]:
        return await service.table(actor, table)

    return [
        Tool(
            "get-backend-metadata",
            "The backend for an agent, in compact markdown lines: tables with columns, foreign keys, RLS and "
            "policies, what anon may do, auth settings, buckets, functions, channels, models, schedules, "
            "database webhooks, the latest advisor scan, KV namespaces, memory scopes, and the schema "
            "fingerprint. Read it before writing code against the backend.",
            get_backend_metadata,
        ),
        Tool(
            "describe-table",
            "One table or view in full: columns, keys, the relationships an embed can follow, indexes, "
            "constraints, RLS and policies, triggers, what anon and authenticated may do, row count. "
            "`schema.table` for a schema other than public.",
            describe_table,
        ),
    ]


def metadata_resources(service: MetadataService) -> list[McpResource]:
    async def backend(actor: Actor) -> str:
        return await service.markdown(actor)

    async def one_table(actor: Actor, table: str) -> str:
        return orjson.dumps(await service.table(actor, table), option=orjson.OPT_INDENT_2).decode()

    return [
        McpResource(
            "kilnbase://metadata",
            "backend-metadata",
            "The backend for an agent, in compact markdown: tables, policies, auth, buckets, functions, "
            "channels, models, schedules, webhooks, the advisor's latest scan, KV namespaces, memory scopes "
            "and the schema fingerprint.",
            backend,
        ),
        McpResource(
            "kilnbase://metadata/{table}",
            "table-metadata",
            "One table or view in full (as describe-table): `schema.table` for a schema other than public.",
            one_table,
            mime_type="application/json",
        ),
    ]
