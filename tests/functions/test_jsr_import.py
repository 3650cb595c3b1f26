"""`jsr:` imports through a JSR-shaped registry the test serves on loopback (`JSR_URL`), fetched at deploy
and served from the cache under the data directory."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from tests.functions.conftest import Deploy

MODULE = b'export function shout(s: string): string { return s.toUpperCase() + "!"; }\n'
FILES = {
    "/@kiln/shout/meta.json": {
        "scope": "kiln",
        "name": "shout",
        "latest": "1.0.0",
        "versions": {"1.0.0": {}},
    },
    "/@kiln/shout/1.0.0_meta.json": {
        "manifest": {
            "/mod.ts": {"size": len(MODULE), "checksum": "sha256-" + hashlib.sha256(MODULE).hexdigest()}
        },
        "exports": {".": "./mod.ts"},
    },
}


class Registry(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/@kiln/shout/1.0.0/mod.ts":
            body, kind = MODULE, "application/typescript"
        elif self.path in FILES:
            body, kind = json.dumps(FILES[self.path]).encode(), "application/json"
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def jsr_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    monkeypatch.setenv("JSR_URL", url)
    yield url
    server.shutdown()
    server.server_close()


def test_jsr_import(client: TestClient, deploy: Deploy, jsr_registry: str) -> None:
    slug = deploy(
        'import { shout } from "jsr:@kiln/shout@1.0.0";\nexport default () => new Response(shout("hello"));'
    )
    assert client.get(f"/functions/{slug}").text == "HELLO!"


def test_missing_jsr_package_is_refused(client: TestClient, admin: dict[str, str], jsr_registry: str) -> None:
    code = 'import { x } from "jsr:@kiln/absent@1.0.0";\nexport default () => new Response(x);'
    response = client.post("/api/functions", json={"name": "absent", "code": code}, headers=admin)
    assert response.status_code == 400
    assert "@kiln/absent" in response.json()["message"]
