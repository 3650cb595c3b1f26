"""python-socketio's in-process manager, sending a room's packet to its members one after another.

The stock manager encodes an emit's packet once and then creates one asyncio task per recipient to queue it;
queueing a packet never waits (each socket's queue is unbounded; its own writer task sends), so the tasks buy
nothing and, for a room of a thousand, cost most of the emit. This sends the same packets in the same order
without them. With Redis, what a process sends to its own sockets only (`ignore_queue`) goes the same way.
"""

from __future__ import annotations

from typing import Any

import socketio  # type: ignore[import-untyped]
from engineio import packet as eio_packet  # type: ignore[import-untyped]
from socketio import packet


async def send_to_room(manager: Any, event: str, data: Any, namespace: str, room: Any, skip_sid: Any) -> None:
    """The packet encoded once, then queued for each member of the room in this process, in turn."""
    if namespace not in manager.rooms:
        return
    if isinstance(data, tuple):
        data = list(data)
    elif data is not None:
        data = [data]
    else:
        data = []
    skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
    encoded = manager.server.packet_class(packet.EVENT, namespace=namespace, data=[event, *data]).encode()
    parts = encoded if isinstance(encoded, list) else [encoded]
    frames = [eio_packet.Packet(eio_packet.MESSAGE, part) for part in parts]
    send = manager.server.eio.send_packet
    for sid, eio_sid in manager.get_participants(namespace, room):
        if sid not in skip:
            for frame in frames:
                await send(eio_sid, frame)


class DirectEmitManager(socketio.AsyncManager):  # type: ignore[misc]
    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        if callback is not None:
            await super().emit(event, data, namespace, room, skip_sid, callback, to, **kwargs)
            return
        await send_to_room(self, event, data, namespace, to or room, skip_sid)


class DirectEmitRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """The Redis manager, sending what is meant for this process alone (`ignore_queue`) the same way."""

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None = None,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        if callback is None and kwargs.get("ignore_queue"):
            await send_to_room(self, event, data, namespace or "/", to or room, skip_sid)
            return
        await super().emit(event, data, namespace, room, skip_sid, callback, to, **kwargs)
