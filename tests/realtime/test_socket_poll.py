"""What an Engine.IO socket's writer gets from `poll`, as Engine.IO's own `AsyncSocket.poll` defines it: what
is queued, in order; nothing after a closing `None`; `QueueEmpty` once nothing came for
`ping_interval + ping_timeout`. Real Engine.IO sockets of the server Kilnbase runs, no network."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from engineio import exceptions  # type: ignore[import-untyped]
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket  # type: ignore[import-untyped]

from kilnbase.realtime.direct_emit import HandOffEngineServer


async def _connected_socket(**server_options: Any) -> AsyncSocket:
    """A socket registered the way Engine.IO's connect does it, up to the `connect` event."""
    server = HandOffEngineServer(async_mode="asgi", logger=False, **server_options)
    socket = AsyncSocket(server, "s1")
    server.sockets["s1"] = socket
    await server._trigger_event("connect", "s1", {}, run_async=False)
    return socket


def _message(text: str) -> eio_packet.Packet:
    return eio_packet.Packet(eio_packet.MESSAGE, text)


def test_queued_packets_come_out_together_in_order() -> None:
    async def scenario() -> list[str]:
        socket = await _connected_socket()
        for text in ("a", "b", "c"):
            await socket.send(_message(text))
        return [p.encode() for p in await asyncio.wait_for(socket.poll(), 5)]

    assert asyncio.run(scenario()) == ["4a", "4b", "4c"]


def test_a_packet_sent_while_the_writer_waits_wakes_it() -> None:
    async def scenario() -> list[str]:
        socket = await _connected_socket()
        polling = asyncio.ensure_future(socket.poll())
        await asyncio.sleep(0.01)
        assert not polling.done()
        await socket.send(_message("late"))
        return [p.encode() for p in await asyncio.wait_for(polling, 5)]

    assert asyncio.run(scenario()) == ["4late"]


def test_a_closing_socket_ends_the_batch_and_then_polls_empty() -> None:
    async def scenario() -> tuple[list[str], list[Any], int]:
        socket = await _connected_socket()
        await socket.send(_message("last"))
        socket.queue.put_nowait(None)  # what Engine.IO's close puts to stop the writer
        first = [p.encode() for p in await asyncio.wait_for(socket.poll(), 5)]
        then = await asyncio.wait_for(socket.poll(), 5)
        return first, then, socket.queue.qsize()

    first, then, left = asyncio.run(scenario())
    assert first == ["4last"]
    assert then == []
    assert left == 0


def test_nothing_to_send_for_the_ping_interval_and_timeout_is_queue_empty() -> None:
    async def scenario() -> object:
        socket = await _connected_socket(ping_interval=0.05, ping_timeout=0.05)
        with pytest.raises(exceptions.QueueEmpty):
            await asyncio.wait_for(socket.poll(), 5)
        # The waiter that timed out is passed over: the next packet goes to the next poll. (Queued directly:
        # `send` would find this socket's pings overdue by now and close it.)
        socket.queue.put_nowait(_message("after"))
        return [p.encode() for p in await asyncio.wait_for(socket.poll(), 5)]

    assert asyncio.run(scenario()) == ["4after"]


def test_a_writer_fed_within_each_timeout_never_times_out() -> None:
    """The timeout runs from the start of each wait, not of the first: eight waits of 0.15 s in a row (1.2 s
    in all, more than twice the 0.5 s timeout) each end with their packet; only then does a wait time out."""

    async def scenario() -> list[str]:
        socket = await _connected_socket(ping_interval=0.25, ping_timeout=0.25)
        received: list[str] = []
        for n in range(8):
            polling = asyncio.ensure_future(socket.poll())
            await asyncio.sleep(0.15)
            socket.queue.put_nowait(_message(str(n)))  # directly, as above: pings are not answered here
            received += [p.encode() for p in await asyncio.wait_for(polling, 5)]
        with pytest.raises(exceptions.QueueEmpty):
            await asyncio.wait_for(socket.poll(), 5)
        return received

    assert asyncio.run(scenario()) == [f"4{n}" for n in range(8)]
