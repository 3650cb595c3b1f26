"""Presence shared by every process of the project, in Redis (with `REDIS_URL`).

While Redis cannot be reached, subscribing and leaving still work (messages come from Postgres): a new
member sees only itself, and a member that leaves stays listed until its keys expire; both are logged.

Per room, a hash of members (presence id -> member JSON) and, per member, a set of the socket ids that hold
them there. Adding a socket and removing one are single Lua scripts, so two processes adding the same user's
sockets at once announce one join, and removing the last socket announces one leave. Keys carry the project's
prefix (several projects may share one Redis). Announcements travel between processes through
python-socketio's Redis manager, like every emit to a room.

A process that stops cleanly removes its sockets (each disconnects); one that is killed leaves its members
listed until they reconnect and leave, or the keys expire (`_TTL_SECONDS` after the room's last change).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from kilnbase.redis_client import REDIS_DOWN, connect_redis

log = logging.getLogger("kilnbase.realtime.presence")

_TTL_SECONDS = 24 * 3600
_TRACK = """
redis.call('SADD', KEYS[2], ARGV[1])
local joined = redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {joined, redis.call('HVALS', KEYS[1])}
"""
_UNTRACK = """
redis.call('SREM', KEYS[2], ARGV[1])
if redis.call('SCARD', KEYS[2]) > 0 then
    return false
end
local member = redis.call('HGET', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[1], ARGV[2])
return member
"""


class RedisPresence:
    def __init__(self, url: str, prefix: str) -> None:
        self._redis = connect_redis(url)
        self._prefix = prefix
        #: socket id -> room -> presence id, for this process's sockets.
        self._sockets: dict[str, dict[str, str]] = {}
        self._track = self._redis.register_script(_TRACK)
        self._untrack = self._redis.register_script(_UNTRACK)

    def _keys(self, room: str, presence_id: str) -> list[str]:
        return [f"{self._prefix}presence:{room}", f"{self._prefix}presence:{room}:{presence_id}"]

    async def track(self, room: str, sid: str, member: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        presence_id = member["presenceId"]
        self._sockets.setdefault(sid, {})[room] = presence_id
        args = [sid, presence_id, orjson.dumps(member), _TTL_SECONDS]
        try:
            joined, members = await self._track(keys=self._keys(room, presence_id), args=args)
        except REDIS_DOWN as exc:
            # Messages reach the socket all the same (they come from Postgres); only presence is missing.
            log.warning("presence: could not add %s to %s: %s", sid, room, type(exc).__name__)
            return [member], True
        return [orjson.loads(raw) for raw in members], bool(joined)

    async def untrack(self, room: str, sid: str) -> dict[str, Any] | None:
        presence_id = self._sockets.get(sid, {}).pop(room, None)
        if not self._sockets.get(sid, True):
            del self._sockets[sid]
        if presence_id is None:
            return None
        try:
            member = await self._untrack(keys=self._keys(room, presence_id), args=[sid, presence_id])
        except REDIS_DOWN as exc:
            # The socket still leaves its room (the caller goes on); the member stays listed until it
            # leaves again from another socket, or its keys expire.
            log.warning("presence: could not remove %s from %s: %s", sid, room, type(exc).__name__)
            return None
        return orjson.loads(member) if member else None

    async def close(self) -> None:
        for sid, rooms in list(self._sockets.items()):
            for room in list(rooms):
                await self.untrack(room, sid)
        await self._redis.aclose()
