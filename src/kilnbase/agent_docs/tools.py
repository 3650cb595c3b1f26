"""The agent documents as MCP tools (public, like `/api/docs`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from kilnbase.agent_docs.service import DOC_TYPES, AgentDocs, DocType, Feature, WrittenLanguage
from kilnbase.capability import McpResource, Tool
from kilnbase.http.errors import ApiError
from kilnbase.identity.actor import Actor


def docs_tools(docs: AgentDocs) -> list[Tool]:
    async def fetch_docs(
        actor: Actor,
        doc_type: Annotated[DocType, Field(description="'instructions' first")],
    ) -> str:
        return docs.doc_type(doc_type).content

    async def fetch_sdk_docs(
        actor: Actor,
        feature: Feature,
        language: WrittenLanguage,
    ) -> str:
        return docs.sdk(feature, language).content

    return [
        Tool(
            "fetch-docs",
            "Kilnbase's documentation for agents: 'instructions' (read first: what this server has and the "
            "rules that make code correct), then the database, auth and AI documents.",
            fetch_docs,
            needs_admin=False,
        ),
        Tool(
            "fetch-sdk-docs",
            "Documentation of one feature in one language (TypeScript SDK, REST, Python), with examples that "
            "run against this server. A capability this server lacks says so.",
            fetch_sdk_docs,
            needs_admin=False,
        ),
    ]


def docs_resources(docs: AgentDocs) -> list[McpResource]:
    async def document(actor: Actor, docType: str) -> str:
        if docType not in DOC_TYPES:
            raise ApiError(404, "NOT_FOUND", f"No document {docType!r}.", f"One of: {', '.join(DOC_TYPES)}.")
        return docs.doc_type(docType).content

    return [
        McpResource(
            "kilnbase://docs/{docType}",
            "agent-docs",
            "Kilnbase's documentation for agents, as fetch-docs returns it: instructions (read first), "
            "db-sdk, auth-sdk, storage-sdk, functions-sdk, ai-integration-sdk, real-time, deployment, "
            "payments.",
            document,
            needs_admin=False,
        )
    ]
