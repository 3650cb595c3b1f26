"""`QuietServer`, the uvicorn of `kilnbase serve`: it sleeps while no connection is open (no ticks), and yet
every response carries the `Date` of its second, and stopping an idle server begins at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
import uvicorn

from kilnbase.server.quiet_uvicorn import QuietServer
from tests.support.servers import free_port


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture
def served() -> Iterator[tuple[str, QuietServer, threading.Thread]]:
    port = free_port()
    config = uvicorn.Config(hello, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = QuietServer(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", server, thread
    server.should_exit = True
    thread.join(timeout=30)


def dated(response: httpx.Response) -> float:
    return parsedate_to_datetime(response.headers["date"]).timestamp()


def test_a_new_connection_after_an_idle_spell_gets_the_date_of_its_second(
    served: tuple[str, QuietServer, threading.Thread],
) -> None:
    url = served[0]
    for _ in range(3):
        time.sleep(1.3)  # nobody connected: the server sleeps through at least one turn of the second
        before = time.time()
        assert dated(httpx.get(url)) >= int(before)


def test_the_date_keeps_up_while_a_connection_stays_open(
    served: tuple[str, QuietServer, threading.Thread],
) -> None:
    url = served[0]
    with httpx.Client() as client:
        client.get(url)
        time.sleep(2.2)
        before = time.time()
        # (Made just after each turn of the second: a request at that moment may see the second before.)
        assert dated(client.get(url)) >= int(before) - 1


def test_stopping_an_idle_server_begins_at_once(served: tuple[str, QuietServer, threading.Thread]) -> None:
    _url, server, thread = served
    time.sleep(1.0)  # asleep with no timeout
    server.should_exit = True
    thread.join(timeout=5)
    assert not thread.is_alive()
