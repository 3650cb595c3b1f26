"""Reading a request's whole body in ASGI middleware that must see it before the route does (idempotency
keys hash it, the approval gate reads it), and handing it on so the route reads it as if it came fresh.
The edge has already bounded the body's size (`request_context.py`), so holding it is safe."""

from __future__ import annotations

from starlette.types import Message, Receive


async def read_all(receive: Receive) -> bytes:
    body = await read_at_most(receive, None)
    assert body is not None
    return body


async def read_at_most(receive: Receive, limit: int | None) -> bytes | None:
    """The whole body, or None as soon as it is longer than `limit` bytes (the rest is left unread)."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields `body` once, then whatever the client sends next (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
