"""The functions host's port: one owner per machine, and new connections sent to the newest listener of the
SO_REUSEPORT group (what lets a host be replaced without a connection refused or reset). Plain sockets stand
for the hosts."""

from __future__ import annotations

import socket

from kilnbase.functions.port_group import claim_port, newest_listener_group
from tests.support.servers import free_port


def listener(port: int) -> socket.socket:
    """A host's listening socket, as Deno's `reusePort` makes it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    sock.settimeout(0)
    return sock


def accepted_by(port: int, listeners: list[socket.socket], connections: int = 20) -> set[int]:
    """Which of `listeners` (by index) the kernel gave `connections` new connections to."""
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    try:
        chosen: set[int] = set()
        for index, sock in enumerate(listeners):
            while True:
                try:
                    accepted, _ = sock.accept()
                except BlockingIOError:
                    break
                accepted.close()
                chosen.add(index)
        return chosen
    finally:
        for client in clients:
            client.close()


def test_one_process_at_a_time_holds_the_port() -> None:
    port = free_port()
    first = claim_port("127.0.0.1", port)
    assert first is not None
    assert claim_port("127.0.0.1", port) is None
    other_port = claim_port("127.0.0.1", free_port())
    assert other_port is not None
    first.close()
    again = claim_port("127.0.0.1", port)
    assert again is not None
    for claim in (again, other_port):
        claim.close()


def test_new_connections_go_to_the_newest_listener() -> None:
    port = free_port()
    with newest_listener_group("127.0.0.1", port) as founded:
        assert founded
        first = listener(port)
    try:
        assert accepted_by(port, [first]) == {0}
        successor = listener(port)  # the host that replaces it
        assert accepted_by(port, [first, successor]) == {1}
        first.close()  # (it drained)
        assert accepted_by(port, [successor]) == {0}
        third = listener(port)
        assert accepted_by(port, [successor, third]) == {1}
        third.close()
    finally:
        first.close()
        successor.close()
