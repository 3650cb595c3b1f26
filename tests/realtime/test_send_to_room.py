"""A room's packet goes straight into each live socket's queue; a socket that is closed or overdue for its
ping goes through Engine.IO's own path, which drops it or closes it, and the other members still get theirs.
Real python-socketio and Engine.IO objects, no network: what is asserted is what each socket's writer
would send next."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from engineio.async_socket import AsyncSocket  # type: ignore[import-untyped]

from kilnbase.realtime.direct_emit import DirectEmitManager, FanOutServer

ROOM = "realtime:chat"


def _server() -> Any:
    server = FanOutServer(
        async_mode="asgi", client_manager=DirectEmitManager(), logger=False, engineio_logger=False
    )
    server.manager.initialize()
    return server


async def _member(server: Any, eio_sid: str) -> AsyncSocket:
    socket = AsyncSocket(server.eio, eio_sid)
    socket.connected = True
    server.eio.sockets[eio_sid] = socket
    sid = await server.manager.connect(eio_sid, "/")
    await server.manager.enter_room(sid, "/", ROOM)
    return socket


def _queued(socket: AsyncSocket) -> list[str]:
    out = []
    while not socket.queue.empty():
        out.append(socket.queue.get_nowait().encode())
    return out


def test_live_members_get_the_event_in_order_and_others_in_the_room_do_not_block_them() -> None:
    async def scenario() -> tuple[list[str], list[str], list[str], bool, bool]:
        server = _server()
        live, closed, overdue = [await _member(server, eio_sid) for eio_sid in ("a", "b", "c")]
        closed.closed = True
        overdue.last_ping = time.time() - server.eio.ping_timeout - 5
        await server.emit("bench", {"n": 1}, room=ROOM, ignore_queue=True)
        await server.emit("bench", {"n": 2}, room=ROOM, ignore_queue=True)
        return _queued(live), _queued(closed), _queued(overdue), "b" in server.eio.sockets, overdue.closed

    live, closed, overdue, closed_still_listed, overdue_closed = asyncio.run(scenario())
    assert live == ['42["bench",{"n":1}]', '42["bench",{"n":2}]']
    assert closed == []
    assert not closed_still_listed  # Engine.IO forgets a closed session when something is sent to it
    # The overdue socket was closed by Engine.IO's ping check, and got no event.
    assert overdue_closed
    assert overdue == []


def test_the_sender_is_skipped() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        server = _server()
        sender, other = await _member(server, "a"), await _member(server, "b")
        sender_sid = server.manager.sid_from_eio_sid("a", "/")
        await server.emit("hello", "x", room=ROOM, skip_sid=sender_sid, ignore_queue=True)
        return _queued(sender), _queued(other)

    sender, other = asyncio.run(scenario())
    assert sender == []
    assert other == ['42["hello","x"]']
