"""Agent memory's MCP tools: the same `Memory` calls as `/api/memory`, for the agent itself. Load the index at
the start of a task (titles only, no model called), recall what a step needs, remember what the next task
should know. Recall and the index are reads (`memory:read`); remember is a write (`memory:write`), which no
person needs to approve: it adds or merges memories and deletes none."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from kilnbase.capability import Tool, given_fields
from kilnbase.identity.actor import Actor
from kilnbase.memory import definitions
from kilnbase.memory.definitions import Kind
from kilnbase.memory.service import Memory

Scope = Annotated[
    str,
    Field(
        description='A namespace of your choosing (a project, an agent, an end user); "default" if left out',
        min_length=1,
        max_length=definitions.MAX_SCOPE,
    ),
]


#: The tools' arguments that are fields of a request body.
_FIELDS = frozenset(
    {"scope", "title", "content", "kind", "transcript", "source", "query", "limit", "threshold"}
)


def memory_tools(memory: Memory) -> list[Tool]:
    async def remember_memory(
        actor: Actor,
        scope: Scope = "default",
        title: Annotated[str | None, Field(description="One line", max_length=definitions.MAX_TITLE)] = None,
        content: Annotated[
            str | None,
            Field(description="One self-contained statement", max_length=definitions.MAX_CONTENT),
        ] = None,
        kind: Annotated[Kind | None, Field(description="Default: fact")] = None,
        transcript: Annotated[
            str | None,
            Field(
                description="Instead of title and content: a task's transcript to extract memories from",
                max_length=definitions.MAX_TRANSCRIPT,
            ),
        ] = None,
        source: Annotated[
            str | None, Field(description="Where it comes from", max_length=definitions.MAX_SOURCE)
        ] = None,
    ) -> dict[str, Any]:
        return await memory.remember(actor, given_fields(locals(), _FIELDS))

    async def recall_memories(
        actor: Actor,
        query: Annotated[str, Field(min_length=1, max_length=definitions.MAX_QUERY)],
        scope: Scope = "default",
        limit: Annotated[
            int, Field(ge=1, le=definitions.MAX_RECALL_LIMIT)
        ] = definitions.DEFAULT_RECALL_LIMIT,
        threshold: Annotated[
            float | None, Field(ge=0, le=1, description="Cosine similarity floor (default 0.45)")
        ] = None,
    ) -> dict[str, Any]:
        return await memory.recall(actor, given_fields(locals(), _FIELDS))

    async def get_memory_index(actor: Actor, scope: Scope = "default") -> dict[str, Any]:
        return await memory.index(actor, {"scope": scope})

    return [
        Tool(
            "get-memory-index",
            "Every memory title of a scope (id, kind, title, updated_at), newest first; cheap: no model "
            "is called. Load it at the start of a task, then recall what you need.",
            get_memory_index,
        ),
        Tool(
            "recall-memories",
            "The memories of a scope closest to a query, by meaning and by words: "
            "{memories: [{id, kind, title, content, similarity, updated_at}]}.",
            recall_memories,
        ),
        Tool(
            "remember-memory",
            "Remember a durable fact, decision, preference or reference ({title, content}), or give a "
            "task's transcript to extract them; a near-duplicate is merged or skipped: "
            "{results: [{action: ADD|UPDATE|NOOP, id, title}]}.",
            remember_memory,
            read_only=False,
        ),
    ]
