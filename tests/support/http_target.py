"""A loopback HTTP server that records every request (method, path, headers lower-cased, raw body) and
answers by its path's first segment: `/ok/...` 200, `/fail/...` 500, `/slow/...` 200 after `slow_seconds`."""

from __future__ import annotations

import http.server
import threading
import time
from typing import Any

from tests.support.loopback_http import LoopbackHttp


class HttpTarget(LoopbackHttp):
    def __init__(self, slow_seconds: float = 3.0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with target.arrived:
                    target.requests.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                        }
                    )
                    target.arrived.notify_all()
                kind = self.path.strip("/").split("/")[0]
                if kind == "slow":
                    time.sleep(slow_seconds)
                self.send_response(500 if kind == "fail" else 200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *_args: Any) -> None:
                pass

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return self.origin

    def to(self, path: str) -> list[dict[str, Any]]:
        with self.arrived:
            return [request for request in self.requests if request["path"] == path]

    def wait_for(self, path: str, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        """The requests to `path`, once there are `count` of them (fails after `timeout` seconds)."""
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.to(path)) >= count, timeout=timeout), self.to(path)
            return self.to(path)
