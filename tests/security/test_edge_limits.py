"""Limits at the edge: bodies are bounded while they stream, before any parsing (413, naming the limit and
the setting that changes it), per surface; the request line and headers are bounded too (431)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import psutil
import pytest
from starlette.testclient import TestClient

from kilnbase.config import Settings
from tests.support.postgres import TestCluster
from tests.support.servers import ServerProcess

JSON_LIMIT = 4096
GATEWAY_LIMIT = 8192
UPLOAD_LIMIT = 16384


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        max_json_body_bytes=JSON_LIMIT,
        max_gateway_body_bytes=GATEWAY_LIMIT,
        max_upload_body_bytes=UPLOAD_LIMIT,
        max_header_bytes=8192,
    )


def chunks(total: int, size: int = 1024) -> Iterator[bytes]:
    """A body sent without a Content-Length (chunked), so only counting as it streams can stop it."""
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        yield b" " * piece
        sent += piece


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("path", "limit", "setting"),
    [
        ("/api/database/records/anything", JSON_LIMIT, "KILNBASE_MAX_JSON_BODY_BYTES"),
        ("/api/auth/sessions", JSON_LIMIT, "KILNBASE_MAX_JSON_BODY_BYTES"),
        ("/api/database/advance/import", UPLOAD_LIMIT, "KILNBASE_MAX_UPLOAD_BODY_BYTES"),
        ("/api/ai/chat/completion", GATEWAY_LIMIT, "KILNBASE_MAX_GATEWAY_BODY_BYTES"),
    ],
)
def test_a_body_over_its_surface_limit_is_413_in_insforge_shape(
    client: TestClient, admin: dict[str, str], path: str, limit: int, setting: str, declared: bool
) -> None:
    body = b" " * (limit + 1) if declared else chunks(limit + 1)
    kind = "multipart/form-data; boundary=kb" if path.endswith("/import") else "application/json"
    response = client.post(path, content=body, headers={**admin, "content-type": kind})
    assert response.status_code == 413, response.text
    payload = response.json()
    assert payload["statusCode"] == 413 and payload["error"] == "PAYLOAD_TOO_LARGE"
    assert f"{limit} bytes" in payload["message"] and setting in payload["nextActions"]


def test_a_content_length_of_thousands_of_digits_is_413_not_a_500(
    client: TestClient, anon: dict[str, str]
) -> None:
    headers = {**anon, "content-type": "application/json", "content-length": "9" * 5000}
    response = client.post("/api/auth/sessions", content=b"{}", headers=headers)
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "PAYLOAD_TOO_LARGE"


def test_a_body_at_the_limit_passes_the_edge(client: TestClient, anon: dict[str, str]) -> None:
    response = client.post(
        "/api/auth/sessions", content=chunks(JSON_LIMIT), headers={**anon, "content-type": "application/json"}
    )
    assert response.status_code == 400  # the edge let it through: the body is just not valid JSON


def test_the_gateway_refuses_in_openai_shape(client: TestClient, anon: dict[str, str]) -> None:
    response = client.post("/v1/chat/completions", content=chunks(GATEWAY_LIMIT + 1), headers=anon)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and "KILNBASE_MAX_GATEWAY_BODY_BYTES" in error["message"]


def test_oversized_headers_are_431(client: TestClient, anon: dict[str, str]) -> None:
    response = client.get("/api/database/records/x", headers={**anon, "prefer": "count=exact," * 1000})
    assert response.status_code == 431
    assert "KILNBASE_MAX_HEADER_BYTES" in response.json()["nextActions"]
    long_url = client.get("/api/database/records/x?select=" + "a," * 5000, headers=anon)
    assert long_url.status_code == 431


@pytest.fixture(scope="module")
def server(cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("limits") / "data", env={"DATABASE_URL": cluster.create_database("limits")}
    )
    process.start()
    yield process
    process.stop()


def test_the_server_stays_small_when_sent_huge_bodies(server: ServerProcess) -> None:
    """53 MB to the records API took the server from 109 MB to 1.3 GB; 20 MB to sign-in, to 763 MB."""
    anon_key = (server.data_dir / "keys.json").read_text().split('"anon_key": "')[1].split('"')[0]
    assert server.process is not None
    process = psutil.Process(server.process.pid)
    before = process.memory_info().rss
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for path, size in (("/api/database/records/anything", 53), ("/api/auth/sessions", 20)):
            for _ in range(3):
                response = http.post(
                    path,
                    content=chunks(size * 1024 * 1024, 64 * 1024),
                    headers={"authorization": f"Bearer {anon_key}", "content-type": "application/json"},
                )
                assert response.status_code == 413
    time.sleep(0.2)
    grown = process.memory_info().rss - before
    assert grown < 48 * 1024 * 1024, f"the server grew by {grown / 1024 / 1024:.0f} MB"
