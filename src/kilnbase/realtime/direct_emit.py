"""python-socketio's in-process manager, sending a room's packet to its members one after another, and the
Engine.IO server whose per-socket queues hand a packet to a waiting writer without a task.

The stock manager encodes an emit's packet once and then creates one asyncio task per recipient to queue it;
queueing a packet never waits (each socket's queue is unbounded; its own writer task sends), so the tasks buy
nothing and, for a room of a thousand, cost most of the emit. This sends the same packets in the same order
without them, putting each straight into the socket's queue: what Engine.IO's `send_packet` does for a live
socket, less a coroutine chain and a log call per recipient. A socket that is gone, closed or overdue for
its ping takes Engine.IO's own path, which warns or closes it. With Redis, this process's share of every
emit goes the same way.

Each Engine.IO socket's writer waits for its next packet with `asyncio.wait_for(queue.get(), timeout)`; with
`asyncio.Queue` that wraps the `get()` coroutine in a new task every time, which is one task per socket per
broadcast when each socket has one packet to send (a fan-out), and was the largest cost of the fan-out after
the socket writes themselves. `HandOffQueue.get()` returns a future instead, and a packet put while a writer
waits is handed to it directly. The queue is Engine.IO's public `create_queue()` extension point; the same
packets reach the same writer in the same order. `wait_for` itself, even over a future, was then the next
largest cost, so each socket polls through a `Poller`: the same contract, with one timer per socket.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

import engineio  # type: ignore[import-untyped]
import engineio.exceptions  # type: ignore[import-untyped]
import socketio  # type: ignore[import-untyped]
from engineio import packet as eio_packet
from engineio.async_drivers import asgi as eio_asgi  # type: ignore[import-untyped]
from socketio import packet

from kilnbase.redis_client import connect_redis


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
    eio = manager.server.eio
    sockets, send, ping_timeout = eio.sockets, eio.send_packet, eio.ping_timeout
    now = time.time()
    for sid, eio_sid in manager.get_participants(namespace, room):
        if sid in skip:
            continue
        socket = sockets.get(eio_sid)
        last_ping = socket.last_ping if socket is not None else None
        if socket is None or socket.closed or (last_ping and now - last_ping > ping_timeout):
            # Gone, closed or overdue: Engine.IO's own path (it warns, or closes the socket).
            for frame in frames:
                await send(eio_sid, frame)
            continue
        for frame in frames:
            socket.queue.put_nowait(frame)


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
    """The Redis manager, sending what is meant for this process's sockets the same way: what only this
    process sends (`ignore_queue`), and its share of every emit to all processes."""

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

    def _redis_connect(self) -> None:
        """Kilnbase's bounded, waiting pool (`redis_client.py`) instead of redis-py's default, whose 101st
        publish in flight fails (a crowd leaving a room publishes one announcement each)."""
        if "sentinel" in urlparse(self.redis_url).scheme:
            super()._redis_connect()
            return
        self.redis = connect_redis(self.redis_url)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.connected = True

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        """An emit to this process's sockets, whether it began here or came from another process through
        Redis (presence announcements, for one: a room of a thousand is a thousand of them per join)."""
        if message.get("callback") is not None or message.get("binary"):
            await super()._handle_emit(message)
            return
        data = message["data"]
        data = data[0] if len(data) == 1 else tuple(data)
        await send_to_room(
            self,
            message["event"],
            data,
            message.get("namespace") or "/",
            message.get("room"),
            message.get("skip_sid"),
        )


class HandOffQueue(asyncio.Queue[Any]):
    """An unbounded `asyncio.Queue` whose `get()` is a future, not a coroutine (no task under `wait_for`).

    While a getter waits the queue is empty (a `get()` on a non-empty queue is answered at once), so a put
    item goes to the first getter still waiting, in first-in, first-out order; a getter cancelled (by
    `wait_for`'s timeout) is passed over and the item stays queued. Items go through `asyncio.Queue`'s own
    `put_nowait` and `get_nowait`, so `task_done()` and `join()` count as they do there."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: deque[asyncio.Future[Any]] = deque()

    def get(self) -> asyncio.Future[Any]:  # type: ignore[override]  # awaited the same; a future, not a task
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.empty():
            self._waiting.append(future)
        else:
            future.set_result(self.get_nowait())
        return future

    def put_nowait(self, item: Any) -> None:
        super().put_nowait(item)
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(self.get_nowait())
                return


class Poller:
    """Engine.IO's `AsyncSocket.poll` for one socket (the packets its writer sends next; `QueueEmpty` once
    nothing came for `ping_interval + ping_timeout`), without `asyncio.wait_for` and without a timer per wait.

    `wait_for` wraps each wait in a second future, a callback and an extra turn of the loop, and was the
    largest cost of a fan-out after the socket writes; a timer set and cancelled around each wait was the
    next (a heap push and a handle per delivery). Each wait now only moves the socket's deadline; one timer
    per socket, set when none is pending, fires at the deadline it knew and, if the writer has been fed
    since, sleeps again until the new one."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self._waiter: asyncio.Future[Any] | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    async def __call__(self) -> list[Any]:
        queue: HandOffQueue = self.socket.queue
        if queue.empty():
            loop = asyncio.get_running_loop()
            server = self.socket.server
            waiter = self._waiter = queue.get()
            self._deadline = loop.time() + server.ping_interval + server.ping_timeout
            if self._timer is None:
                self._timer = loop.call_at(self._deadline, self._expire)
            try:
                first = await waiter
            except asyncio.CancelledError:  # timed out, or the writer itself was cancelled: as Engine.IO does
                self._stop_timer()
                raise engineio.exceptions.QueueEmpty() from None
            finally:
                self._waiter = None
        else:
            first = queue.get_nowait()
        queue.task_done()
        if first is None:
            self._stop_timer()
            return []
        packets = [first]
        while not queue.empty():
            item = queue.get_nowait()
            queue.task_done()
            if item is None:  # the socket is closing: its writer stops after these
                queue.put_nowait(None)
                break
            packets.append(item)
        return packets

    def _expire(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # not waiting now: the next wait sets a timer
        loop = waiter.get_loop()
        if loop.time() >= self._deadline:
            waiter.cancel()
        else:
            self._timer = loop.call_at(self._deadline, self._expire)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


#: Socket.IO's own event names. A client may not send them (Socket.IO's JavaScript parser refuses them), nor
#: may a message be emitted under one (its JavaScript server throws): python-socketio would run the server's
#: `connect` or `disconnect` handler for a client's event of that name, and a client's for a message.
RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)
#: The Socket.IO packet types a client sends (CONNECT_ERROR is the server's).
_CLIENT_PACKETS = frozenset(
    {packet.CONNECT, packet.DISCONNECT, packet.EVENT, packet.ACK, packet.BINARY_EVENT, packet.BINARY_ACK}
)


class CheckedWebSocket(eio_asgi.WebSocket):  # type: ignore[misc]
    """Engine.IO's ASGI WebSocket, whose frames that are no Engine.IO packet end the connection.

    Engine.IO's handler decodes each frame outside its error handling: an empty or garbled frame raised
    out of the ASGI app (a traceback per frame) and left the socket registered, its writer running and its
    Socket.IO `disconnect` never run, until the ping timeout found it. Such a frame now reads as the
    client closing (what Engine.IO's JavaScript server does on a parse error): the handler closes the
    socket, and its subscriptions and presence end at once."""

    async def wait(self) -> Any:
        data = await super().wait()
        try:
            eio_packet.Packet(encoded_packet=data)
        except (ValueError, IndexError):  # (a bad base64 payload is a ValueError too)
            return None
        return data


class HandOffEngineServer(engineio.AsyncServer):  # type: ignore[misc]
    #: The async driver's parts (Engine.IO's own attribute): its WebSocket is `CheckedWebSocket`.
    _async: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (A copy: the driver's table is the module's, shared by every server.)
        self._async = {**self._async, "websocket": CheckedWebSocket}

    def create_queue(self, *args: Any, **kwargs: Any) -> Any:
        """Sockets' packet queues (the only queues Engine.IO's server makes) are `HandOffQueue`s."""
        if args or kwargs:
            return super().create_queue(*args, **kwargs)
        return HandOffQueue()

    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        """On `connect` (the socket exists and is registered, its writer not started yet), the socket polls
        its queue through a `Poller`."""
        if event == "connect":
            socket = self.sockets.get(args[0])
            if socket is not None:
                socket.poll = Poller(socket)
        return await super()._trigger_event(event, *args, **kwargs)


class FanOutServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's ASGI server over `HandOffEngineServer`, which hands a client's malformed packet to
    `on_malformed(sid)` instead of raising.

    python-socketio decodes and dispatches a client's packets without checking them: a packet that does not
    decode, a packet type a client never sends, or an event whose name is missing, not a string or one of
    Socket.IO's own raised inside the library (a logged traceback per packet, and no answer), and an event
    named `connect` or `disconnect` ran the server's own handler of that name (the connection forgotten
    while its rooms still delivered to it). Each is now answered through `on_malformed` (with an empty
    acknowledgement when the client asked for one); before the client has joined the namespace there is
    no one to answer, and the connection is closed, as Socket.IO's JavaScript server does."""

    def __init__(
        self, *args: Any, on_malformed: Callable[[str], Awaitable[None]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.on_malformed = on_malformed

    def _engineio_server_class(self) -> type[Any]:
        return HandOffEngineServer

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if eio_sid not in self._binary_packet:  # (an attachment is raw bytes, taken as they come)
            try:
                decoded = self.packet_class(encoded_packet=data)
            except (ValueError, RecursionError):  # (invalid JSON is a ValueError; deep nesting recurses)
                decoded = None
            if decoded is None or decoded.packet_type not in _CLIENT_PACKETS:
                await self._malformed(eio_sid, "/", None)
                return
        await super()._handle_eio_message(eio_sid, data)

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: int | None, data: Any) -> None:
        if isinstance(data, list) and data and isinstance(data[0], str) and data[0] not in RESERVED_EVENTS:
            await super()._handle_event(eio_sid, namespace, id, data)
            return
        await self._malformed(eio_sid, namespace or "/", id)

    async def _malformed(self, eio_sid: str, namespace: str, id: int | None) -> None:
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not self.manager.is_connected(sid, namespace):
            await self.eio.disconnect(eio_sid)
            return
        if id is not None:
            await self._send_packet(
                eio_sid, self.packet_class(packet.ACK, namespace=namespace, id=id, data=[])
            )
        if self.on_malformed is not None:
            await self.on_malformed(sid)
