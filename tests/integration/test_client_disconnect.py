"""A client that closes the connection while its upload is still coming is logged as what it is: one
request line with status 499 (nginx's "client closed request"), at INFO, and no error and no traceback, from
Kilnbase or from the server. Over a real socket against uvicorn, the server Kilnbase serves with."""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from kilnbase.app import KilnbaseApp, create_app
from kilnbase.config import Settings
from tests.support.uvicorn_thread import UvicornThread

#: The upload the client declares, and the part of it it sends before it hangs up.
DECLARED, SENT = 4 * 1024 * 1024, 64 * 1024


@pytest.fixture(scope="module")
def served(settings: Settings) -> Iterator[tuple[UvicornThread, KilnbaseApp]]:
    app = create_app(settings)
    assert isinstance(app, KilnbaseApp)
    server = UvicornThread(app)
    server.start()
    yield server, app
    server.stop()


def _hang_up_mid_upload(port: int, path: str, api_key: str) -> None:
    lines = [
        f"PUT {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Authorization: Bearer {api_key}",
        "Content-Type: application/octet-stream",
        f"Content-Length: {DECLARED}",
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b"x" * SENT)
        time.sleep(0.3)  # (the server is reading the body by now)


def test_a_client_that_hangs_up_mid_upload_is_a_499_line_without_a_traceback(
    served: tuple[UvicornThread, KilnbaseApp], caplog: pytest.LogCaptureFixture
) -> None:
    server, app = served
    api_key = app.services.core.keys.ring.current("api_key")
    admin = {"Authorization": f"Bearer {api_key}"}
    bucket = f"b-{secrets.token_hex(5)}"
    made = httpx.post(f"{server.url}/api/storage/buckets", json={"bucketName": bucket}, headers=admin)
    assert made.status_code == 201, made.text
    path = f"/api/storage/buckets/{bucket}/objects/left-{secrets.token_hex(4)}.bin"
    # uvicorn's own logger does not reach the root (where caplog listens): listen to it too.
    uvicorn_errors = logging.getLogger("uvicorn.error")
    uvicorn_errors.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO):
            _hang_up_mid_upload(server.port, path, api_key)
            deadline = time.monotonic() + 10
            lines: list[logging.LogRecord] = []
            while not lines and time.monotonic() < deadline:
                time.sleep(0.05)
                lines = [r for r in caplog.records if getattr(r, "fields", {}).get("path") == path]
    finally:
        uvicorn_errors.removeHandler(caplog.handler)

    assert [(r.levelno, r.fields["status"]) for r in lines] == [(logging.INFO, 499)]  # type: ignore[attr-defined]
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING] == []
    # The request log says the same, and nothing was stored.
    logged: list[str] = []
    while not logged and time.monotonic() < deadline:
        time.sleep(0.1)
        found = httpx.get(f"{server.url}/api/logs/insforge.logs", params={"q": path}, headers=admin).json()
        logged = [line["eventMessage"] for line in found["logs"]]
    assert logged and logged[0].startswith(f"PUT {path} 499")
    listed = httpx.get(f"{server.url}/api/storage/buckets/{bucket}/objects", headers=admin).json()
    assert listed["data"] == []
