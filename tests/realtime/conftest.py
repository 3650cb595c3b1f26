"""A Kilnbase app served by uvicorn on loopback (one per test module), python-socketio clients against it,
and the policies a test needs, written as the developer writes them: raw SQL with the admin key."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import socketio  # type: ignore[import-untyped]

from kilnbase.app import KilnbaseApp, create_app
from kilnbase.config import RealtimeSettings, Settings
from tests.support.uvicorn_thread import UvicornThread

#: Tests in this folder tune the limits low enough to reach them.
LIMITS = RealtimeSettings(
    max_subscriptions=5,
    events_per_second=20,
    event_burst=40,
    max_payload_bytes=1024,
    session_check_seconds=0.2,
    webhook_attempts=3,
    webhook_retry_delay=0.05,
    webhook_timeout=5,
)


@dataclass
class RealtimeServer:
    url: str
    app: KilnbaseApp

    @property
    def api_key(self) -> str:
        return self.app.services.core.keys.ring.current("api_key")

    @property
    def anon_key(self) -> str:
        return self.app.services.core.keys.ring.current("anon_key")

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def user_token(self, user_id: str | None = None, *, expires_in: int = 900, **extra: str) -> str:
        claims = {
            "sub": user_id or str(uuid.uuid4()),
            "role": "authenticated",
            "email": "u@example.com",
            **extra,
        }
        return self.app.services.core.tokens.sign(claims, expires_in=expires_in)

    def sql(self, query: str) -> Any:
        response = httpx.post(
            f"{self.url}/api/database/advance/rawsql", headers=self.admin, json={"query": query}, timeout=30
        )
        assert response.status_code == 200, response.text
        return response.json()

    def channel(self, pattern: str, **fields: Any) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/api/realtime/channels", headers=self.admin, json={"pattern": pattern, **fields}
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture(scope="module")
def realtime_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealtimeServer]:
    settings = Settings(database_url=database_url, data_dir=tmp_path_factory.mktemp("data"), realtime=LIMITS)
    app = create_app(settings)
    server = UvicornThread(app)
    server.start()
    yield RealtimeServer(server.url, app)
    server.stop()


def unique(prefix: str) -> str:
    """A channel name no other test uses (tests run in any order, in parallel modules)."""
    return f"{prefix}:{uuid.uuid4().hex[:10]}"


@dataclass
class Client:
    """A python-socketio client that records every event it receives, in order."""

    sio: socketio.AsyncClient
    events: list[tuple[str, Any]] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def _record(self, event: str, data: Any = None) -> None:
        self.events.append((event, data))
        self._arrived.set()

    async def next(self, event: str, *, timeout: float = 10, after: int = 0) -> Any:
        """The first `event` received (beyond the first `after` events), waiting for it."""
        return await self.until(event, lambda _data: True, timeout=timeout, after=after)

    async def until(
        self, event: str, matches: Callable[[Any], bool], *, timeout: float = 10, after: int = 0
    ) -> Any:
        """The first `event` received (beyond the first `after` events) whose data `matches`."""
        async with asyncio.timeout(timeout):
            while True:
                for name, data in self.events[after:]:
                    if name == event and matches(data):
                        return data
                self._arrived.clear()
                await self._arrived.wait()

    def received(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    async def subscribe(self, channel: str) -> dict[str, Any]:
        ack: dict[str, Any] = await self.sio.call("realtime:subscribe", {"channel": channel}, timeout=10)
        return ack


async def connect(server: RealtimeServer | str, auth: dict[str, Any] | None) -> Client:
    """A connected client, to a server under test or to a URL."""
    url = server if isinstance(server, str) else server.url
    sio = socketio.AsyncClient(reconnection=False)
    client = Client(sio)
    sio.on("*", client._record)
    sio.on("disconnect", lambda *_: client._record("disconnect"))
    await sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=10)
    return client


async def refused(server: RealtimeServer, auth: dict[str, Any] | None) -> dict[str, Any]:
    """The `connect_error` data of a handshake the server refuses."""
    sio = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    sio.on("connect_error", lambda data: errors.append(data))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(server.url, auth=auth, transports=["websocket"], wait_timeout=10)
    assert errors, "the server accepted the handshake"
    data: dict[str, Any] = errors[0]
    return data
