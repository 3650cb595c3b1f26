"""A lean HTTP/1.1 client for the calls to model providers: keep-alive connections per origin on asyncio
protocols, responses read by httptools (the C parser uvicorn already uses).

A provider call is on the path of every gateway request. Through httpx2 (client, transport, connection pool,
h11, anyio streams and their cancel scopes) one call cost about 600 us of CPU, half of the gateway's whole
budget; this costs about a tenth of that. It does only what a provider call needs: one exchange at a time
per connection, a response read whole or streamed (with back-pressure), connect and read timeouts, TLS with
httpx2's trust settings, gzip/deflate bodies, and one transparent retry when a kept-alive connection turns
out to have been closed by the server before it answered. Providers reached through an HTTP proxy use httpx2
instead (see `providers.py`), as does everything off the hot path (catalogs, key checks).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools
import httpx2

#: Bytes buffered from a streamed response before reading from the socket pauses (back-pressure).
_HIGH_WATER = 256 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}


class TransportFailure(Exception):
    """The provider could not be reached, or the connection failed or spoke broken HTTP."""


class TransportTimeout(TransportFailure):
    """Connecting, waiting for a free connection, or waiting for the next bytes took too long."""


@dataclass(frozen=True)
class _Target:
    origin: tuple[str, str, int]
    host_header: str
    request_target: str


@dataclass
class HttpResponse:
    status: int
    #: Lower-case names; a repeated header's values joined with ", ".
    headers: dict[str, str]
    body: bytes


class _Exchange:
    """One request/response on a connection, filled in by the parser callbacks."""

    __slots__ = (
        "body",
        "buffered",
        "complete",
        "decoder",
        "error",
        "headers",
        "headers_done",
        "keep_alive",
        "on_end",
        "raw_headers",
        "received",
        "status",
        "streaming",
        "until_eof",
        "waiter",
    )

    def __init__(self, streaming: bool) -> None:
        self.streaming = streaming
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.body: list[bytes] = []
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.until_eof = False
        self.received = False
        self.error: TransportFailure | None = None
        self.decoder: zlib._Decompress | None = None
        self.waiter: asyncio.Future[None] | None = None
        #: Called once the exchange ends (complete or failed) while nobody reads it any more.
        self.on_end: Callable[[], None] | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout: float) -> None:
        self._loop = loop
        self._read_timeout = read_timeout
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.idle_since = 0.0
        self._paused = False
        self._last_read = 0.0
        self._exchange: _Exchange | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self.open = True

    def data_received(self, data: bytes) -> None:
        self._last_read = self._loop.time()
        exchange = self._exchange
        if exchange is None or exchange.complete:
            self.close()  # bytes nobody asked for: the connection cannot be trusted any more
            return
        exchange.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(TransportFailure("The provider sent malformed HTTP."))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        exchange = self._exchange
        if exchange is None or exchange.complete or exchange.error is not None:
            return
        if exchange.headers_done and exchange.until_eof:
            self.on_message_complete()  # a body delimited by the end of the connection
        else:
            self._fail(TransportFailure("The connection to the provider was closed."))

    # -- httptools callbacks ---------------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._exchange is not None
        self._exchange.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        exchange = self._exchange
        assert exchange is not None
        status = self._parser.get_status_code()
        if status < 200:  # 1xx (103 Early Hints...): informational, the real answer follows
            exchange.raw_headers.clear()
            return
        headers: dict[str, str] = {}
        for raw_name, raw_value in exchange.raw_headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        exchange.status = status
        exchange.headers = headers
        exchange.headers_done = True
        exchange.keep_alive = self._parser.should_keep_alive()
        exchange.until_eof = "content-length" not in headers and "chunked" not in headers.get(
            "transfer-encoding", ""
        )
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "deflate"):
            exchange.decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib, by their header
        elif encoding != "identity":
            self._fail(TransportFailure(f"The provider sent an unsupported content encoding ({encoding})."))
            self.close()
            return
        if exchange.streaming:
            exchange.wake()

    def on_body(self, body: bytes) -> None:
        exchange = self._exchange
        assert exchange is not None
        if exchange.decoder is not None:
            try:
                body = exchange.decoder.decompress(body)
            except zlib.error:
                self._fail(TransportFailure("The provider sent a corrupt compressed body."))
                self.close()
                return
        if not body:
            return
        exchange.body.append(body)
        if exchange.streaming:
            exchange.buffered += len(body)
            if exchange.buffered > _HIGH_WATER and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
            exchange.wake()

    def on_message_complete(self) -> None:
        exchange = self._exchange
        assert exchange is not None
        if not exchange.headers_done:
            return  # the end of a 1xx response
        if exchange.decoder is not None:
            tail = exchange.decoder.flush()
            if tail:
                exchange.body.append(tail)
        exchange.complete = True
        exchange.wake()
        if exchange.on_end is not None:
            exchange.on_end()

    # -- the client side -------------------------------------------------------------------------------------
    def _fail(self, error: TransportFailure) -> None:
        exchange = self._exchange
        if exchange is not None and exchange.error is None and not exchange.complete:
            exchange.error = error
            exchange.wake()
            if exchange.on_end is not None:
                exchange.on_end()

    def start(self, request: bytes, streaming: bool) -> _Exchange:
        assert self.transport is not None
        exchange = self._exchange = _Exchange(streaming)
        self._last_read = self._loop.time()
        self.transport.write(request)
        return exchange

    async def wait(self, exchange: _Exchange) -> None:
        """Until the parser reports progress; a read timeout when no byte arrives for `read_timeout`."""
        loop = self._loop
        waiter = exchange.waiter = loop.create_future()
        since = loop.time()
        self._timer = loop.call_at(since + self._read_timeout, self._check_silence, exchange, since)
        try:
            await waiter
        finally:
            if self._timer is not None:
                self._timer.cancel()
            exchange.waiter = None

    def _check_silence(self, exchange: _Exchange, since: float) -> None:
        quiet_since = max(self._last_read, since)
        if self._loop.time() - quiet_since >= self._read_timeout:
            self._fail(TransportTimeout("The provider did not answer in time."))
            self.close()
        else:
            self._timer = self._loop.call_at(
                quiet_since + self._read_timeout, self._check_silence, exchange, since
            )

    def take(self, exchange: _Exchange) -> list[bytes]:
        """The streamed body received so far (and reading resumes if it had paused)."""
        chunks, exchange.body, exchange.buffered = exchange.body, [], 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunks

    def finished(self, exchange: _Exchange) -> bool:
        """True when the connection can serve another exchange."""
        self._exchange = None
        return exchange.complete and exchange.keep_alive and self.open and not self._paused

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.abort()


class StreamedResponse:
    """A response whose body is read as it arrives with `next_chunk()`; always `aclose()` it."""

    def __init__(self, pool: HttpPool, target: _Target, conn: _Connection, exchange: _Exchange) -> None:
        self.status = exchange.status
        self.headers = exchange.headers
        self._pool = pool
        self._target = target
        self._conn = conn
        self._exchange = exchange
        self._closed = False

    async def next_chunk(self) -> bytes | None:
        """The body's next bytes, None at its end."""
        exchange, conn = self._exchange, self._conn
        while True:
            if exchange.body:
                chunks = conn.take(exchange)
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if exchange.error is not None:
                raise exchange.error
            if exchange.complete:
                return None
            await conn.wait(exchange)

    async def read(self) -> bytes:
        chunks = []
        while (chunk := await self.next_chunk()) is not None:
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self, drain: bool = False) -> None:
        """Give the connection back when the body was read to its end, else close it. With `drain` (the
        caller saw the payload's own end, such as `data: [DONE]`, but the body's last bytes may still be on
        their way) the rest is read in the background, so the connection can be kept."""
        if self._closed:
            return
        self._closed = True
        self._pool._slots.release()
        exchange, conn = self._exchange, self._conn
        if drain and not exchange.complete and exchange.error is None and conn.open:
            conn.take(exchange)
            timer = asyncio.get_running_loop().call_later(1.0, conn.close)

            def ended() -> None:
                timer.cancel()
                exchange.on_end = None
                self._pool._release(self._target, conn, exchange)

            exchange.on_end = ended
            return
        self._pool._release(self._target, conn, exchange)


class HttpPool:
    """Keep-alive connections per origin (scheme, host, port), most recently used first."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int = 1024,
        max_idle_per_origin: int = 256,
        keepalive_expiry: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_idle = max_idle_per_origin
        self._keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._targets: dict[str, _Target] = {}

    # -- public ----------------------------------------------------------------------------------------------
    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
        target = self._target(url)
        raw = _encode(method, target, headers, body)
        await self._acquire_slot()
        try:
            conn, exchange = await self._exchange(target, raw, streaming=False)
            self._release(target, conn, exchange)
            return HttpResponse(exchange.status, exchange.headers, b"".join(exchange.body))
        finally:
            self._slots.release()

    async def stream(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> StreamedResponse:
        """Send the request and return once the response's status and headers are in."""
        target = self._target(url)
        raw = _encode(method, target, headers, body)
        await self._acquire_slot()
        try:
            conn, exchange = await self._exchange(target, raw, streaming=True)
            return StreamedResponse(self, target, conn, exchange)
        except BaseException:
            self._slots.release()
            raise

    async def _exchange(
        self, target: _Target, raw: bytes, *, streaming: bool
    ) -> tuple[_Connection, _Exchange]:
        """Run the exchange until the response is whole (streaming: until its headers are in), on a kept-alive
        connection, or on a fresh one when the kept-alive one turns out to have been closed by the server."""
        for fresh_only in (False, True):
            conn, reused = await self._connection(target, fresh_only)
            exchange = conn.start(raw, streaming=streaming)
            try:
                while (
                    not (exchange.headers_done if streaming else exchange.complete) and exchange.error is None
                ):
                    await conn.wait(exchange)
            except BaseException:
                conn.close()  # cancelled mid-exchange: the connection's state is unknown
                raise
            if exchange.error is not None and not (streaming and exchange.headers_done):
                conn.close()
                if reused and not exchange.received and not isinstance(exchange.error, TransportTimeout):
                    continue  # a kept-alive connection the server had already closed: try a new one
                raise exchange.error
            return conn, exchange
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for conn in connections:
                conn.close()
        self._idle.clear()

    # -- connections -----------------------------------------------------------------------------------------
    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            if scheme not in _DEFAULT_PORTS or not parts.hostname:
                raise TransportFailure(f"Unsupported provider URL scheme: {scheme or 'none'}.")
            port = parts.port or _DEFAULT_PORTS[scheme]
            host = parts.hostname
            host_header = f"[{host}]" if ":" in host else host
            if port != _DEFAULT_PORTS[scheme]:
                host_header += f":{port}"
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            target = _Target((scheme, host, port), host_header, path)
            if len(self._targets) > 1000:
                self._targets.clear()
            self._targets[url] = target
        return target

    async def _acquire_slot(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()
            return
        try:
            async with asyncio.timeout(self._read_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise TransportTimeout("No connection to the provider became free in time.") from None

    async def _connection(self, target: _Target, fresh_only: bool) -> tuple[_Connection, bool]:
        idle = self._idle.get(target.origin)
        if idle and not fresh_only:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                if conn.open and now - conn.idle_since < self._keepalive_expiry:
                    return conn, True
                conn.close()
        return await self._connect(target), False

    async def _connect(self, target: _Target) -> _Connection:
        loop = asyncio.get_running_loop()
        scheme, host, port = target.origin
        conn = _Connection(loop, self._read_timeout)
        tls = None
        if scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = httpx2.create_ssl_context()
            tls = self._ssl_context
        try:
            async with asyncio.timeout(self._connect_timeout):
                await loop.create_connection(
                    lambda: conn, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            conn.close()
            raise TransportTimeout("Connecting to the provider took too long.") from None
        except (OSError, ssl.SSLError) as exc:
            conn.close()
            raise TransportFailure(f"The provider could not be reached ({type(exc).__name__}).") from None
        return conn

    def _release(self, target: _Target, conn: _Connection, exchange: _Exchange) -> None:
        if not conn.finished(exchange):
            conn.close()
            return
        idle = self._idle.setdefault(target.origin, [])
        if len(idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)


def _encode(method: str, target: _Target, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [f"{method} {target.request_target} HTTP/1.1\r\nhost: {target.host_header}\r\n"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise TransportFailure(f"Invalid characters in the {name} header.")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"content-length: {len(body)}\r\n\r\n")
    try:
        head = "".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise TransportFailure("A header holds characters HTTP cannot carry.") from None
    return head + body
