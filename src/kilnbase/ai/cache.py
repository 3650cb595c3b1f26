"""Exact-match cache for non-streaming chat and for embeddings: in process, bounded, with a TTL.

Only the policy turns it on (a request's `x-kilnbase-cache: off` can only turn it off for that request). The
key is a hash of the entry's owner (a gateway key, a user, an anon client address, a principal) and of the
provider-bound request (model, messages, every parameter): an answer is replayed only to the caller it was
made for, and only for a request that would have sent the same bytes upstream.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any

import orjson


def cache_key(kind: str, owner: str, body: dict[str, Any]) -> str:
    digest = hashlib.sha256(owner.encode() + b"\0" + orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
    return kind + ":" + digest.hexdigest()


def wanted(enabled_by_policy: bool, mode: str | None) -> bool:
    """Whether a call uses the cache: the policy decides; a request may only opt out."""
    return enabled_by_policy and mode != "off"


class ResponseCache:
    def __init__(self, ttl: float, max_entries: int) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if time.monotonic() - entry[0] > self._ttl:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: str, value: dict[str, Any]) -> None:
        if self._max <= 0:
            return
        self._entries[key] = (time.monotonic(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
