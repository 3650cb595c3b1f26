"""A loopback webhook receiver that records each POST (headers lower-cased, raw body), optionally answering
503 to the first attempt at each message so that retries can be seen, or (`drip`) answering 200 with a body
that arrives a byte at a time, for as long as the caller keeps reading."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import threading
import time
from typing import Any

from tests.support.loopback_http import LoopbackHttp


def signed_with(secret: str, request: dict[str, Any]) -> bool:
    """Whether a recorded request carries Kilnbase's signature: HMAC-SHA256 of `<timestamp>.<body>`."""
    headers = request["headers"]
    signed = headers["x-insforge-timestamp"].encode() + b"." + request["body"]
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["x-insforge-signature"], expected)


class WebhookReceiver(LoopbackHttp):
    def __init__(self, *, fail_first: bool = False, drip: bool = False) -> None:
        self.requests: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                message_id = self.headers["x-insforge-message-id"]
                with receiver.arrived:
                    first = all(r["messageId"] != message_id for r in receiver.requests)
                    receiver.requests.append(
                        {
                            "messageId": message_id,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                        }
                    )
                    receiver.arrived.notify_all()
                self.send_response(503 if fail_first and first else 200)
                self.send_header("content-length", "100000" if drip else "0")
                self.end_headers()
                for _ in range(100000 if drip else 0):  # (each byte well within any read timeout)
                    try:
                        self.wfile.write(b".")
                        self.wfile.flush()
                    except OSError:
                        return
                    time.sleep(0.5)

            def log_message(self, *_args: Any) -> None:
                pass

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return f"{self.origin}/hook"

    def wait_for(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.requests) >= count, timeout=timeout)
            return list(self.requests)
