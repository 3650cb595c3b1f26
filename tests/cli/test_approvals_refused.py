"""`kilnbase approvals` given what it cannot act on, as a person at the terminal types it: an id that names
no change request (or holds `/`, `..`, `?`), and a --url that is not a Kilnbase server. Each is said in one
line with what to do next, and an id never reaches another route with the project's API key."""

from __future__ import annotations

import http.server
import subprocess
import sys

import pytest

from tests.support.cli import assert_said_in_one_line
from tests.support.loopback_http import LoopbackHttp
from tests.support.servers import ServerProcess


def approvals(
    live_server: ServerProcess, *args: str, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = ["approvals", *args, "--data-dir", str(live_server.data_dir), "--url", url or live_server.url]
    return subprocess.run(
        [sys.executable, "-m", "kilnbase", *command],
        capture_output=True,
        text=True,
        env=live_server.env | {"COLUMNS": "200"},
        timeout=60,
        check=False,
    )


#: Ids that name no change request; the last three would reach `/api/health`, or leave the path, unquoted.
IDS = ["00000000-0000-0000-0000-000000000000", "not-an-id", "../../health", "x?status=all", "x#y"]


@pytest.mark.parametrize("decision", ["approve", "reject"])
@pytest.mark.parametrize("request_id", IDS)
def test_an_id_that_names_no_change_request(
    live_server: ServerProcess, decision: str, request_id: str
) -> None:
    result = approvals(live_server, decision, request_id)
    assert_said_in_one_line(
        result, f"No change request has the id {request_id!r}", "approvals list --status all"
    )


class _NotKilnbase(http.server.BaseHTTPRequestHandler):
    """Another web server on the port given: HTML, whatever is asked."""

    def do_GET(self) -> None:
        body = b"<html><body>It works!</body></html>"
        self.send_response(200 if self.path == "/api/approvals?status=pending" else 404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def test_a_url_that_is_not_a_kilnbase_server(live_server: ServerProcess) -> None:
    with LoopbackHttp(_NotKilnbase) as other:
        for args in (["list"], ["list", "--status", "done"]):  # (answered 200, then 404, in HTML)
            result = approvals(live_server, *args, url=other.origin)
            assert_said_in_one_line(result, other.origin, "not a Kilnbase server's URL", "Pass --url")
