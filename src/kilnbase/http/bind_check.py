"""Whether a port can be listened on, asked before a server starts on it rather than learnt from its crash."""

from __future__ import annotations

import socket


def bind_error(host: str, port: int) -> OSError | None:
    """Why `host:port` cannot be bound as a server binds it (`SO_REUSEADDR`, so a closed connection's
    TIME_WAIT does not count), or None when it can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc
    return None
