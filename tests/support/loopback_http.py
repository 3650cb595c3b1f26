"""A threaded HTTP server on a free loopback port, for the outside parties the tests stand up (webhook
receivers, schedule targets): started on `with`, shut down on leaving it, never waiting for its handlers."""

from __future__ import annotations

import http.server
import threading
from types import TracebackType
from typing import Self


class LoopbackHttp:
    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
