"""A loopback receiver of database webhooks: records every POST (headers lower-cased, raw body) by path, and
answers from a script per path (a status, or "drop": close the connection without an answer, as a receiver
that is down), then 200 once the script is used up."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import secrets
import threading
from typing import Any

from tests.support.loopback_http import LoopbackHttp


def signature_valid(secret: str, request: dict[str, Any]) -> bool:
    """InsForge's database webhook signature: `sha256=` HMAC-SHA256 of the raw body."""
    expected = "sha256=" + hmac.new(secret.encode(), request["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(request["headers"].get("x-insforge-signature", ""), expected)


class Receiver(LoopbackHttp):
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.scripts: dict[str, list[int | str]] = {}
        self.arrived = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.arrived:
                    script = receiver.scripts.get(self.path, [])
                    answer = script.pop(0) if script else 200
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                            "json": json.loads(body),
                            "answered": answer,
                        }
                    )
                    receiver.arrived.notify_all()
                if answer == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                assert isinstance(answer, int)
                self.send_response(answer)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        super().__init__(Handler)

    def new_path(self, *script: int | str) -> str:
        """A fresh path on this receiver, answered by `script` (then 200)."""
        path = f"/hook/{secrets.token_hex(4)}"
        with self.arrived:
            self.scripts[path] = list(script)
        return path

    def to(self, path: str) -> list[dict[str, Any]]:
        with self.arrived:
            return [request for request in self.requests if request["path"] == path]

    def wait_for(self, path: str, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.to(path)) >= count, timeout=timeout), self.to(path)
            return self.to(path)
