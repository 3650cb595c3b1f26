"""HTTP/1.1 to a worker over its Unix socket: kept-alive connections, streamed bodies both ways.

Written here rather than taken from httpx: an invocation is one request to a peer that always speaks plain
HTTP/1.1 on a local socket, and httpx (h11 underneath, pure Python) costs about 480 us of CPU per request
against about 90 us for this (httptools, the C parser uvicorn uses), which is most of what the proxy adds.
Only what a worker needs: no TLS, no redirects, no proxies, no cookies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Sequence

import httptools

_READ = 65536
_MAX_IDLE = 64


class WorkerGone(Exception):
    """The worker closed the connection or broke the protocol before the response was complete."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class WorkerResponse:
    """A response whose head has arrived; its body is read as `chunks()` is iterated."""

    def __init__(self, client: WorkerClient, connection: _Connection, head_only: bool) -> None:
        self._client = client
        self._connection: _Connection | None = connection
        self._head_only = head_only
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._pending: list[bytes] = []
        self._headers_done = False
        self._complete = False
        self._sender: asyncio.Task[None] | None = None
        self._parser = httptools.HttpResponseParser(self)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._pending.append(body)

    def on_message_complete(self) -> None:
        self._complete = True

    async def _feed(self) -> None:
        assert self._connection is not None
        try:
            data = await self._connection.reader.read(_READ)
        except OSError as exc:
            raise WorkerGone(str(exc)) from exc
        if not data:
            raise WorkerGone("the worker closed the connection")
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise WorkerGone(f"the worker's response is not HTTP/1.1: {exc}") from exc

    async def read_head(self) -> None:
        while not self._headers_done:
            await self._feed()
        if self._head_only or self.status in (204, 304):
            self._complete = True

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self._pending:
                pending, self._pending = self._pending, []
                for chunk in pending:
                    yield chunk
            elif self._complete:
                return
            else:
                await self._feed()

    async def aclose(self) -> None:
        """Give the connection back when the exchange ended cleanly; close it otherwise."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        sender = self._sender
        clean = (
            self._complete
            and not self._pending
            and not self._head_only
            and (sender is None or (sender.done() and not sender.cancelled() and sender.exception() is None))
            and self._parser.should_keep_alive()
        )
        if sender is not None and not sender.done():
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
        if clean:
            self._client.release(connection)
        else:
            connection.close()


class WorkerClient:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._idle: list[_Connection] = []
        self._closed = False

    async def _connect(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.reader.at_eof() and not connection.writer.is_closing():
                return connection
            connection.close()
        try:
            reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=_READ)
        except OSError as exc:
            raise WorkerGone(str(exc)) from exc
        return _Connection(reader, writer)

    def release(self, connection: _Connection) -> None:
        if self._closed or len(self._idle) >= _MAX_IDLE:
            connection.close()
        else:
            self._idle.append(connection)

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: AsyncIterable[bytes] | None = None,
        content_length: int | None = None,
    ) -> WorkerResponse:
        """Send the request (the body streams in a task of its own, so a worker may answer before it has
        read all of it) and return once the response's head has arrived."""
        connection = await self._connect()
        head = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1")]
        for name, value in headers:
            head += [name, b": ", value, b"\r\n"]
        chunked = body is not None and content_length is None
        if chunked:
            head.append(b"transfer-encoding: chunked\r\n")
        elif body is not None and content_length is not None:
            head.append(b"content-length: %d\r\n" % content_length)
        head.append(b"\r\n")
        response = WorkerResponse(self, connection, head_only=method == "HEAD")
        try:
            connection.writer.write(b"".join(head))
            if body is not None:
                response._sender = asyncio.create_task(_send_body(connection.writer, body, chunked))
            await response.read_head()
        except BaseException:
            await response.aclose()
            raise
        return response

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


async def _send_body(writer: asyncio.StreamWriter, body: AsyncIterable[bytes], chunked: bool) -> None:
    try:
        async for chunk in body:
            if not chunk:
                continue
            if chunked:
                writer.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            else:
                writer.write(chunk)
            await writer.drain()
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()
    except OSError:
        pass  # the worker went away: the response side says so
