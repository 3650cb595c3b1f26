"""The lean HTTP/1.1 client for provider calls, against real servers on loopback: a scripted raw TCP server
(to send exactly the bytes a case needs: chunked, gzip, a body ended by closing, a stale keep-alive), TLS,
and the scripted OpenRouter reached through an HTTP proxy by httpx2."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kilnbase.ai.providers import OpenAICompatibleProvider, UpstreamError
from kilnbase.ai.upstream_http import HttpPool, StreamedResponse, TransportFailure, TransportTimeout
from tests.support.fake_openrouter import FakeOpenRouter

pytestmark = pytest.mark.anyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{"ok": true}'


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request (head and Content-Length body), or b"" when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


class RawServer:
    """A loopback server whose handler writes raw bytes; it counts connections and keeps what it read."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed_by_client = asyncio.Event()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        finally:
            writer.close()

    async def request(self, reader: asyncio.StreamReader) -> bytes:
        raw = await read_request(reader)
        if raw:
            self.requests.append(raw)
        return raw


@asynccontextmanager
async def raw_server(
    handler: Callable[[RawServer, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[RawServer, str]]:
    box: list[RawServer] = []
    server = RawServer(lambda r, w: handler(box[0], r, w))
    box.append(server)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield server, f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        listener.close()


def pool(**overrides: float) -> HttpPool:
    return HttpPool(
        connect_timeout=overrides.get("connect_timeout", 2.0), read_timeout=overrides.get("read_timeout", 2.0)
    )


async def keep_alive(server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await server.request(reader):
        writer.write(OK)
        await writer.drain()


async def test_keeps_connections_alive_and_sends_the_request_as_given() -> None:
    client = pool()
    async with raw_server(keep_alive) as (server, url):
        for _ in range(3):
            answer = await client.request("POST", url + "/v1/chat?x=1", {"authorization": "Bearer k"}, b"{}")
            assert (answer.status, answer.body) == (200, b'{"ok": true}')
            assert answer.headers["content-type"] == "application/json"
        assert server.connections == 1
        head = server.requests[0].split(b"\r\n")
        assert head[0] == b"POST /v1/chat?x=1 HTTP/1.1"
        assert f"host: {url.split('//')[1]}".encode() in head
        assert b"authorization: Bearer k" in head
        assert server.requests[0].endswith(b"\r\n\r\n{}")
    await client.aclose()


async def test_chunked_and_gzip_bodies() -> None:
    packed = gzip.compress(b'{"gzipped": "yes"}')

    async def chunked(server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-encoding: gzip\r\n\r\n")
            for piece in (packed[:7], packed[7:]):
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")

    client = pool()
    async with raw_server(chunked) as (server, url):
        assert (await client.request("POST", url, {}, b"{}")).body == b'{"gzipped": "yes"}'
        assert (await client.request("POST", url, {}, b"{}")).body == b'{"gzipped": "yes"}'
        assert server.connections == 1
    await client.aclose()


async def test_a_body_ended_by_closing_the_connection() -> None:
    async def until_close(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\n\r\nupstream ")
        await writer.drain()
        writer.write(b"went away")

    client = pool()
    async with raw_server(until_close) as (server, url):
        for _ in range(2):
            answer = await client.request("POST", url, {}, b"{}")
            assert (answer.status, answer.body) == (502, b"upstream went away")
        assert server.connections == 2  # `connection: close` is honoured
    await client.aclose()


async def test_a_stale_kept_alive_connection_is_replaced_transparently() -> None:
    async def drops_the_second(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if server.connections > 1:
            await keep_alive(server, reader, writer)
            return
        await server.request(reader)
        writer.write(OK)  # keep-alive promised...
        await writer.drain()
        await server.request(reader)  # ...but the next request finds the connection closing

    client = pool()
    async with raw_server(drops_the_second) as (server, url):
        assert (await client.request("POST", url, {}, b"{}")).status == 200
        assert (await client.request("POST", url, {}, b"{}")).status == 200
        assert server.connections == 2
        assert len(server.requests) == 3
    await client.aclose()


async def test_timeouts_and_failures() -> None:
    async def silent(server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nfive ")
        await writer.drain()
        await asyncio.sleep(5)

    async def garbage(server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        writer.write(b"SPDY/9 what\r\n\r\n")

    client = pool(read_timeout=0.3)
    async with raw_server(silent) as (_server, url):
        with pytest.raises(TransportTimeout):
            await client.request("POST", url, {}, b"{}")
    async with raw_server(garbage) as (_server, url):
        with pytest.raises(TransportFailure, match="malformed HTTP"):
            await client.request("POST", url, {}, b"{}")
        with pytest.raises(TransportFailure, match="Invalid characters"):
            await client.request("POST", url, {"authorization": "Bearer k\r\nx-evil: 1"}, b"{}")
    with pytest.raises(TransportFailure, match="could not be reached"):
        await client.request("POST", url, {}, b"{}")  # the server is gone: connection refused
    with pytest.raises(TransportFailure, match="scheme"):
        await client.request("POST", "ftp://127.0.0.1/x", {}, b"{}")
    await client.aclose()


async def test_streams_arrive_as_sent_and_a_connection_is_kept_only_after_the_end() -> None:
    gate = asyncio.Event()

    def frame(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    async def events(server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + frame(b"data: 1\n\n"))
            await writer.drain()
            if len(server.requests) == 1:
                await reader.read()  # until the client leaves
                return
            writer.write(frame(b"data: [DONE]\n\n"))
            await writer.drain()
            await gate.wait()
            gate.clear()
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async def until_done(response: StreamedResponse) -> bytes:
        received = b""
        while b"[DONE]" not in received:
            chunk = await response.next_chunk()
            assert chunk is not None
            received += chunk
        return received

    client = pool()
    async with raw_server(events) as (server, url):
        first = await client.stream("POST", url, {}, b"{}")
        assert first.status == 200
        assert await first.next_chunk() == b"data: 1\n\n"  # while the server holds the rest back
        await first.aclose()  # left midway: the connection cannot be reused
        second = await client.stream("POST", url, {}, b"{}")
        assert await until_done(second) == b"data: 1\n\ndata: [DONE]\n\n"
        await second.aclose(drain=True)  # the body's last bytes are still held back by the server
        gate.set()
        await asyncio.sleep(0.1)
        third = await client.stream("POST", url, {}, b"{}")
        gate.set()
        assert await third.read() == b"data: 1\n\ndata: [DONE]\n\n"
        await third.aclose()
        assert server.connections == 2  # the first closed; the second, drained, served the third
    await client.aclose()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_tls_is_verified(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    async with raw_server(keep_alive, tls=server_tls) as (_server, url):
        trusting = HttpPool(
            connect_timeout=2, read_timeout=2, ssl_context=ssl.create_default_context(cafile=str(cert))
        )
        assert (await trusting.request("POST", url, {}, b"{}")).body == b'{"ok": true}'
        await trusting.aclose()
        default = pool()  # the system's trust store (httpx2's settings) does not know this certificate
        with pytest.raises(TransportFailure, match="could not be reached"):
            await default.request("POST", url, {}, b"{}")
        await default.aclose()


async def test_a_provider_behind_a_proxy_is_called_through_httpx2(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeOpenRouter().start()
    try:
        # The fake answers absolute-form requests, so it can stand in for a forward proxy.
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{fake.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with httpx2.AsyncClient() as client:
            lean = pool()
            proxied = OpenAICompatibleProvider("far", "http://provider.invalid/api/v1", client, pool=lean)
            answer = await proxied.chat(
                {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                "sk-or-v1-fake",
            )
            assert answer.body["choices"][0]["message"]["content"]
            monkeypatch.delenv("HTTP_PROXY")
            direct = OpenAICompatibleProvider("far", "http://provider.invalid/api/v1", client, pool=lean)
            with pytest.raises(UpstreamError) as unreachable:
                await direct.chat({"model": "openai/gpt-4o-mini", "messages": []}, "sk-or-v1-fake")
            assert unreachable.value.status == 0
            await lean.aclose()
    finally:
        fake.stop()
