"""Who is present in each channel: InsForge's presence model.

A member is a signed-in user (by user id, however many sockets they have open) or an anonymous connection
(by socket id). A member joins when their first socket subscribes and leaves when their last one goes;
only those two moments are announced (`presence:join`, `presence:leave`). This tracker holds the sockets of
this process; with Redis configured, `redis_presence.py` holds every process's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class _Entry:
    member: dict[str, Any]
    sockets: set[str] = field(default_factory=set)


class Presence(Protocol):
    async def track(self, room: str, sid: str, member: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        """Add the socket; the room's members afterwards, and whether `member` just joined."""
        ...

    async def untrack(self, room: str, sid: str) -> dict[str, Any] | None:
        """Remove the socket; the member that left, when it was their last socket in the room."""
        ...

    async def close(self) -> None: ...


class LocalPresence:
    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, _Entry]] = {}
        #: socket id -> room -> presence id
        self._sockets: dict[str, dict[str, str]] = {}

    async def track(self, room: str, sid: str, member: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        members = self._rooms.setdefault(room, {})
        presence_id = member["presenceId"]
        entry = members.get(presence_id)
        joined = entry is None
        if entry is None:
            entry = members[presence_id] = _Entry(member)
        entry.sockets.add(sid)
        self._sockets.setdefault(sid, {})[room] = presence_id
        return [e.member for e in members.values()], joined

    async def untrack(self, room: str, sid: str) -> dict[str, Any] | None:
        presence_id = self._sockets.get(sid, {}).pop(room, None)
        if not self._sockets.get(sid, True):
            del self._sockets[sid]
        members = self._rooms.get(room)
        if presence_id is None or members is None or presence_id not in members:
            return None
        entry = members[presence_id]
        entry.sockets.discard(sid)
        if entry.sockets:
            return None
        del members[presence_id]
        if not members:
            del self._rooms[room]
        return entry.member

    async def close(self) -> None:
        self._rooms.clear()
        self._sockets.clear()
