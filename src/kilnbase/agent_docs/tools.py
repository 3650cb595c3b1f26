"""The agent documents as MCP tools (public, like `/api/docs`).

The tools and their arguments are named as `@insforge/mcp` names them (`docType`; `sdkFeature`,
`sdkLanguage`), so an agent prompt written for InsForge calls them unchanged. `sdkLanguage` takes every
language InsForge's tool takes: one this server has not written says so, as `/api/docs` does."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from kilnbase.agent_docs.service import DOC_TYPES, AgentDocs, DocType, Feature, Language
from kilnbase.capability import McpResource, Tool
from kilnbase.http.errors import ApiError
from kilnbase.identity.actor import Actor


def docs_tools(docs: AgentDocs) -> list[Tool]:
    async def fetch_docs(
        actor: Actor,
        docType: Annotated[DocType, Field(description="'instructions' first")],
    ) -> str:
        return docs.doc_type(docType).content

    async def fetch_sdk_docs(
        actor: Actor,
        sdkFeature: Feature,
        sdkLanguage: Annotated[Language, Field(description="typescript, rest-api and python are written")],
    ) -> str:
        return docs.sdk(sdkFeature, sdkLanguage).content

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
