"""The functions host's port as a Linux SO_REUSEPORT group that sends every new connection to the host that
joined it last, so that a host is replaced without a connection refused or reset.

Two hosts listen on the port while one replaces the other (`reusePort` in host.js). Left to itself the kernel
spreads new connections over both by a hash; the one being replaced must stop listening at some moment, and a
connection that reached it just before (accepted, its request not yet read, or still in the listen queue) is
then closed or reset: a few in every replacement under steady traffic. A classic BPF program attached to the
group chooses the listener instead: `return 1`, the second socket of the group. Sockets are numbered in the
order they joined and, when one leaves, the last takes its place; a number past the end falls back to the
hash. So with the program in place:

- the first host joins a group founded here (this module's socket is number 0, the host number 1: every
  connection goes to the host), and the founding socket then leaves (the host becomes number 0, alone);
- the host that replaces it joins as number 1 once it is ready, and receives every new connection from that
  moment; the old one answers what it has already accepted, stops listening and exits (number 1 becomes 0).

The program counts on at most two hosts listening at once. Should a third join (a replacement started while
the host before last still drains, stuck in a loop with its socket open), new connections would go to
number 1, the host being drained, which answers each with `connection: close` until it stops listening.

The program stays with the group as long as any socket is in it, so only the first start (and a restart
after the host died) founds one. Nothing here is needed for the replacement to work: without it (another
address family, a kernel that refuses the program), a connection may be dropped at the moment of the switch.
Attaching the program needs no privilege; Deno has no API to attach one, hence a socket of ours.

Python's `socket` has no binding for `SO_ATTACH_REUSEPORT_CBPF`'s argument (a `struct sock_fprog`, which
holds a pointer): it is built here with ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import socket
import struct
from collections.abc import Iterator

log = logging.getLogger("kilnbase.functions")

#: From <asm-generic/socket.h>.
SO_ATTACH_REUSEPORT_CBPF = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)
#: `BPF_RET | BPF_K`: return the constant `k`.
_BPF_RET_K = 0x06
#: The number of the socket that gets every new connection: the host that joined after the founder, or
#: after the host it replaces.
NEWEST = 1


@contextlib.contextmanager
def newest_listener_group(hostname: str, port: int) -> Iterator[bool]:
    """Found the port's group with the program, for as long as the block runs (start the first host in it);
    yields whether it was founded."""
    founder = _found(hostname, port)
    try:
        yield founder is not None
    finally:
        if founder is not None:
            founder.close()


def claim_port(hostname: str, port: int) -> socket.socket | None:
    """The right to start hosts on `hostname:port`, held by one process of the machine at a time (None:
    another holds it) until the socket returned is closed or the process ends: a name in Linux's abstract
    socket namespace, which the kernel frees with its holder.

    Needed because every host joins the port with SO_REUSEPORT: two API processes that both found the port
    free (`serve --workers N` starts them together) would otherwise both start a host, and both would listen,
    where without `reusePort` the second would have been refused the port."""
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(f"\0kilnbase-functions-host:{hostname}:{port}")
    except OSError:
        claim.close()
        return None
    return claim


def _found(hostname: str, port: int) -> socket.socket | None:
    family = socket.AF_INET6 if ":" in hostname else socket.AF_INET
    founder = socket.socket(family, socket.SOCK_STREAM)
    try:
        founder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        founder.bind((hostname, port))
        founder.listen(1)
        instruction = struct.pack("HBBI", _BPF_RET_K, 0, 0, NEWEST)
        program = ctypes.create_string_buffer(instruction, len(instruction))
        # struct sock_fprog { unsigned short len; struct sock_filter *filter; }: the kernel copies the program
        # during the call, while `program` is alive.
        founder.setsockopt(
            socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, struct.pack("@HP", 1, ctypes.addressof(program))
        )
    except OSError as exc:
        founder.close()
        log.debug("functions host: port %s:%s not steered to the newest host (%s)", hostname, port, exc)
        return None
    return founder


__all__ = ["claim_port", "newest_listener_group"]
