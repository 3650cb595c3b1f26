"""The key-value store's MCP tools: the same `KvStore` calls as `/api/kv`, for the admin and agent side (the
project-global store; audited by the service). InsForge's MCP server has no kv tools; these are Kilnbase's.

No call waits for a person's approval, a delete included: an entry is one small value in a store meant for
caches, counters and flags (most expire on their own within 30 days), and the audit trail names every change.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from kilnbase.capability import Tool
from kilnbase.http.errors import ApiError
from kilnbase.identity.actor import Actor
from kilnbase.kv.definitions import MAX_KEY, MAX_LISTED, MAX_NAMESPACE, MAX_TTL_SECONDS, Visibility, path_part
from kilnbase.kv.service import KvStore

Namespace = Annotated[
    str, Field(description="The namespace (no '/')", min_length=1, max_length=MAX_NAMESPACE)
]
Key = Annotated[
    str, Field(description="The key (no '/'; ':' separates parts)", min_length=1, max_length=MAX_KEY)
]
Ttl = Annotated[
    int | None,
    Field(
        description="Seconds until it expires (set-kv-value: omitted, 30 days; neverExpires for none)",
        ge=1,
        le=MAX_TTL_SECONDS,
    ),
]


def kv_tools(kv: KvStore) -> list[Tool]:
    async def list_kv_keys(
        actor: Actor,
        namespace: Namespace,
        after: Annotated[
            str | None, Field(description="List the keys after this one", max_length=MAX_KEY)
        ] = None,
        limit: Annotated[int, Field(ge=1, le=MAX_LISTED)] = MAX_LISTED,
    ) -> dict[str, Any]:
        keys = await kv.list(actor, path_part("namespace", namespace), after=after, limit=limit)
        return {"keys": keys}

    async def get_kv_value(actor: Actor, namespace: Namespace, key: Key) -> dict[str, Any]:
        ns, k = path_part("namespace", namespace), path_part("key", key)
        return {"value": await kv.get(actor, ns, k), "ttl": await kv.ttl(actor, ns, k)}

    async def get_kv_values(
        actor: Actor, namespace: Namespace, keys: Annotated[list[str], Field(min_length=1, max_length=100)]
    ) -> dict[str, Any]:
        return {"values": await kv.mget(actor, {"namespace": namespace, "keys": keys})}

    async def set_kv_value(
        actor: Actor,
        namespace: Namespace,
        key: Key,
        value: Annotated[Any, Field(description="Any JSON value, at most 256 KiB")],
        ttl: Ttl = None,
        visibility: Visibility = "private",
        ifNotExists: Annotated[bool, Field(description="Only if the key is absent (created: false)")] = False,
        neverExpires: Annotated[bool, Field(description="Keep it until deleted (REST: ttl null)")] = False,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"value": value, "visibility": visibility, "ifNotExists": ifNotExists}
        if neverExpires and ttl is not None:
            raise ApiError(
                400,
                "INVALID_INPUT",
                "Validation error: give ttl or neverExpires, not both",
                "Send ttl (seconds) for an entry that expires, or neverExpires: true for one that does not.",
            )
        if neverExpires or ttl is not None:
            body["ttl"] = ttl  # (None: never, as REST's ttl null; a tool's arguments cannot tell null apart)
        return await kv.set(actor, path_part("namespace", namespace), path_part("key", key), body)

    async def delete_kv_key(actor: Actor, namespace: Namespace, key: Key) -> dict[str, Any]:
        deleted = await kv.delete(actor, path_part("namespace", namespace), path_part("key", key))
        return {"deleted": deleted}

    async def increment_kv_value(
        actor: Actor,
        namespace: Namespace,
        key: Key,
        by: Annotated[int | float, Field(description="What to add (negative: subtract)")] = 1,
    ) -> dict[str, Any]:
        ns, k = path_part("namespace", namespace), path_part("key", key)
        return {"value": await kv.incr(actor, ns, k, {"by": by})}

    async def expire_kv_key(actor: Actor, namespace: Namespace, key: Key, ttl: Ttl) -> dict[str, Any]:
        ns, k = path_part("namespace", namespace), path_part("key", key)
        return {"updated": await kv.expire(actor, ns, k, {"ttl": ttl})}

    return [
        Tool(
            "list-kv-keys",
            "The keys of a namespace of the project's key-value store, in order.",
            list_kv_keys,
        ),
        Tool("get-kv-value", "One key's value and its TTL in seconds (null: never expires).", get_kv_value),
        Tool("get-kv-values", "Several keys' values at once; absent keys are left out.", get_kv_values),
        Tool(
            "set-kv-value",
            "Write a key's JSON value (replacing value, visibility and TTL); ifNotExists only creates.",
            set_kv_value,
            read_only=False,
        ),
        Tool("delete-kv-key", "Delete a key.", delete_kv_key, read_only=False),
        Tool(
            "increment-kv-value",
            "Add to the number at a key, atomically (a missing key starts from 0).",
            increment_kv_value,
            read_only=False,
        ),
        Tool(
            "expire-kv-key",
            "Set a key's TTL in seconds, or null to keep it forever.",
            expire_kv_key,
            read_only=False,
        ),
    ]
