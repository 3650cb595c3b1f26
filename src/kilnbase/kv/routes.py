"""`/api/kv`: InsForge's routes, shapes, codes and messages. Any valid credential (401 without one): the API
key, admins and agent keys manage the project-global store; a user's token reaches that user's entries; the
anon key reads the global store's public entries (`service.py` says who sees what, and why).

A namespace and a key are each one path segment, read from the path as the client sent it: an encoded '/'
(`%2F`) inside one is refused as InsForge refuses it (400 "Invalid key: ..."), never taken for a segment
boundary that would route the call elsewhere (`a%2Fttl` is a key, not the ttl route).

mget is a POST that only reads: an agent key reaches it with `kv:read`, and in read-only mode."""

from __future__ import annotations

from typing import Literal
from urllib.parse import unquote_to_bytes

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.capability import Capability
from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import read_json
from kilnbase.http.query_params import int_param
from kilnbase.http.request_context import actor_of, require_credential
from kilnbase.http.responses import json_response
from kilnbase.identity.actor import Actor
from kilnbase.kv.definitions import MAX_LISTED, path_part
from kilnbase.kv.service import KvStore
from kilnbase.kv.tools import kv_tools

ENTRIES = "/api/kv/entries/"
_ENTRIES_RAW = ENTRIES.encode()


def _caller(request: Request) -> Actor:
    return actor_of(request, require_credential(request))


def _segment(label: Literal["namespace", "key"], raw: bytes) -> str:
    try:
        text = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"Invalid {label}: it is not UTF-8 text",
            f"Percent-encode the {label} as UTF-8.",
        ) from None
    return path_part(label, text)


def _path(request: Request) -> tuple[str, str]:
    """The namespace and the key (empty for the namespace's listing), as sent: from the raw path when the
    server gives it, so that `%2F` stays inside its segment."""
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes) and _ENTRIES_RAW in raw:
        segments = raw.split(_ENTRIES_RAW, 1)[1].split(b"/")
        namespace = _segment("namespace", segments[0])
        return namespace, _segment("key", segments[1]) if len(segments) > 1 else ""
    params = request.path_params
    key = params.get("key")
    return path_part("namespace", params["namespace"]), path_part("key", key) if key is not None else ""


class KvRoutes:
    def __init__(self, kv: KvStore) -> None:
        self.kv = kv

    async def mget(self, request: Request) -> Response:
        actor = _caller(request)
        return json_response({"values": await self.kv.mget(actor, await read_json(request))})

    async def mset(self, request: Request) -> Response:
        actor = _caller(request)
        return json_response({"count": await self.kv.mset(actor, await read_json(request))})

    async def list_keys(self, request: Request) -> Response:
        actor = _caller(request)
        namespace, _ = _path(request)
        after = request.query_params.get("after")
        limit = int_param(request, "limit", MAX_LISTED, 1, MAX_LISTED)
        keys = await self.kv.list(
            actor, namespace, after=path_part("key", after) if after is not None else None, limit=limit
        )
        return json_response({"keys": keys})

    async def ttl(self, request: Request) -> Response:
        actor = _caller(request)
        return json_response({"ttl": await self.kv.ttl(actor, *_path(request))})

    async def get(self, request: Request) -> Response:
        actor = _caller(request)
        return json_response({"value": await self.kv.get(actor, *_path(request))})

    async def set(self, request: Request) -> Response:
        actor = _caller(request)
        namespace, key = _path(request)
        return json_response(await self.kv.set(actor, namespace, key, await read_json(request)))

    async def delete(self, request: Request) -> Response:
        actor = _caller(request)
        return json_response({"deleted": await self.kv.delete(actor, *_path(request))})

    async def incr(self, request: Request) -> Response:
        return await self._add(request, 1)

    async def decr(self, request: Request) -> Response:
        return await self._add(request, -1)

    async def _add(self, request: Request, sign: int) -> Response:
        actor = _caller(request)
        namespace, key = _path(request)
        body = await read_json(request, optional=True)
        return json_response({"value": await self.kv.incr(actor, namespace, key, body, sign=sign)})

    async def cas(self, request: Request) -> Response:
        actor = _caller(request)
        namespace, key = _path(request)
        return json_response({"entry": await self.kv.cas(actor, namespace, key, await read_json(request))})

    async def expire(self, request: Request) -> Response:
        actor = _caller(request)
        namespace, key = _path(request)
        return json_response(
            {"updated": await self.kv.expire(actor, namespace, key, await read_json(request))}
        )

    async def unmatched(self, request: Request) -> Response:
        """A path under the entries that no route takes: a 400 when it is one because a namespace or key
        holds an encoded '/' (the decoded path has a segment more), else the usual 404."""
        _path(request)
        raise HTTPException(404)

    def routes(self) -> list[BaseRoute]:
        entry = "/api/kv/entries/{namespace}/{key}"
        return [
            Route("/api/kv/mget", self.mget, methods=["POST"]),
            Route("/api/kv/mset", self.mset, methods=["POST"]),
            Route("/api/kv/entries/{namespace}", self.list_keys, methods=["GET"]),
            Route(f"{entry}/ttl", self.ttl, methods=["GET"]),
            Route(entry, self.get, methods=["GET"]),
            Route(entry, self.set, methods=["PUT"]),
            Route(entry, self.delete, methods=["DELETE"]),
            Route(f"{entry}/incr", self.incr, methods=["POST"]),
            Route(f"{entry}/decr", self.decr, methods=["POST"]),
            Route(f"{entry}/cas", self.cas, methods=["POST"]),
            Route(f"{entry}/expire", self.expire, methods=["POST"]),
            Route("/api/kv/entries/{path:path}", self.unmatched, methods=["GET", "PUT", "DELETE", "POST"]),
        ]


def capability(kv: KvStore) -> Capability:
    return Capability(
        "kv",
        KvRoutes(kv).routes(),
        background=kv.pruning,
        tools=kv_tools(kv),
        reads=("/api/kv/mget",),
    )
