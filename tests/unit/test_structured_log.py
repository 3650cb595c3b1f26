"""The log scrubber removes credentials whatever shape they arrive in."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from kilnbase import structured_log as structured
from kilnbase.app import create_app
from kilnbase.config import Settings
from kilnbase.structured_log import JsonFormatter, scrub


def test_scrub_removes_keys_tokens_and_passwords() -> None:
    api_key = "ik_" + "a1" * 32
    anon_key = "anon_" + "b2" * 32
    agent_key = "kba_" + "c3" * 32
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    text = (
        f"key={api_key} anon {anon_key} agent {agent_key} bearer {jwt} /x?password=hunter2&a=1 "
        "postgresql://postgres:s3cret@127.0.0.1/db"
    )
    cleaned = scrub(text)
    for secret in (api_key, anon_key, agent_key, jwt, "hunter2", "s3cret"):
        assert secret not in cleaned
    assert "a=1" in cleaned and "127.0.0.1/db" in cleaned


def test_formatter_writes_one_json_object_with_fields() -> None:
    record = logging.LogRecord("kilnbase.request", logging.INFO, __file__, 1, "request", None, None)
    record.fields = {"path": "/api/health", "status": 200}
    entry = json.loads(JsonFormatter().format(record))
    assert entry["path"] == "/api/health" and entry["status"] == 200 and entry["level"] == "info"


def _scrub_every_pattern(text: str) -> str:
    """The scrubber without its quick check: every pattern applied to every line."""
    for pattern in structured._SECRET_PATTERNS:
        if pattern.groups == 2:
            text = pattern.sub(lambda m: f"{m[1]}=[redacted]", text)
        elif pattern.groups == 3:
            text = pattern.sub(lambda m: f"{m[1]}[redacted]{m[3]}", text)
        else:
            text = pattern.sub("[redacted]", text)
    return text


_PIECES = st.sampled_from(
    [
        "ik_",
        "anon_",
        "kba_",
        "eyJ",
        "a1b2c3d4e5f6a7b8c9",
        ".",
        "-",
        "=",
        "&",
        "@",
        ":",
        "/",
        " ",
        "x",
        "_",
        "password",
        "PassWord",
        "pa\u017fsword",
        "passwd",
        "SECRET",
        "api_key",
        "Api-Key",
        "apikey",
        "token",
        "TOKEN",
        "postgres://",
        "PostgreSQL://",
        "u",
        "p@h",
        "\u212a",
    ]
)


@given(st.lists(_PIECES | st.text(max_size=3), max_size=14).map("".join))
def test_the_quick_check_never_skips_a_line_a_pattern_would_change(text: str) -> None:
    assert scrub(text) == _scrub_every_pattern(text)


_CONTROLS = st.sampled_from(["\x1e", "\x0b", "\n", '"', "\\", "yJ", "eyJ", "a.b.c", "\x1eyJx.y.z"])


@given(
    st.lists(_PIECES | _CONTROLS | st.text(max_size=3), max_size=10).map("".join),
    st.sampled_from(["GET", "POST", "to\x0ben", "anon_"]),
    st.sampled_from(["anon", "authenticated", "project_admin", "invalid", "-", "passwd"]),
    st.integers(100, 599),
    st.integers(0, 10**12).map(lambda hundredths: hundredths / 100),
    st.floats(0, 2e9, allow_nan=False),
)
def test_a_request_line_is_what_scrubbing_the_whole_line_gives(
    path: str, method: str, role: str, status: int, duration: float, created: float
) -> None:
    """The request line is put together from remembered parts (`request_line`) only when that gives the
    formatter's line, scrubbed whole, to the character, whatever the path holds: secrets, their hints split
    by characters JSON escapes, or control characters."""
    formatter = JsonFormatter()
    fields = {"method": method, "path": path, "status": status, "duration_ms": duration, "role": role}
    for _ in range(2):  # the second time from what the first remembered
        whole = formatter.line(created, "info", "kilnbase.request", "request", fields)
        assert structured.request_line(formatter, created, fields) == whole


def test_formatter_time_is_the_records_utc_time() -> None:
    record = logging.LogRecord("kilnbase.request", logging.INFO, __file__, 1, "request", None, None)
    formatter = JsonFormatter()
    times = []
    for created, msecs in ((1_700_000_000.25, 250.0), (1_700_000_000.75, 750.0), (1_700_000_001.5, 500.0)):
        record.created, record.msecs = created, msecs
        times.append(json.loads(formatter.format(record))["time"])
    assert times == ["2023-11-14T22:13:20.250Z", "2023-11-14T22:13:20.750Z", "2023-11-14T22:13:21.500Z"]


@pytest.fixture
def json_stdout() -> Iterator[io.StringIO]:
    """A string for `configure_logging` to write to, with the logging set-up restored afterwards. (Tests
    configure in their body: pytest adds its capture handlers to the root logger once the test runs.)"""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, structured._json_handler)
    yield io.StringIO()
    structured.write_waiting_lines()  # (to this test's stream, not the next one's)
    root.handlers[:], root.level, structured._json_handler = saved


def test_request_lines_go_straight_to_the_json_handler_and_are_scrubbed(
    json_stdout: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    structured.configure_logging("info", json_stdout)
    secret = "ik_" + "c3" * 32
    structured.log_request({"method": "GET", "path": f"/x/{secret}", "status": 200})
    (line,) = json_stdout.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["logger"] == "kilnbase.request" and entry["status"] == 200 and entry["level"] == "info"
    assert secret not in line and entry["path"] == "/x/[redacted]"
    # Another destination (here pytest's capture) gets an ordinary record instead, and the line too.
    logging.getLogger().addHandler(caplog.handler)
    structured.log_request({"method": "GET", "path": "/y", "status": 201})
    assert [r.fields["path"] for r in caplog.records] == ["/y"]  # type: ignore[attr-defined]
    assert json.loads(json_stdout.getvalue().splitlines()[-1])["path"] == "/y"
    # Below the logger's level nothing is written at all.
    logging.getLogger().setLevel(logging.WARNING)
    structured.log_request({"method": "GET", "path": "/z", "status": 200})
    assert len(json_stdout.getvalue().splitlines()) == 2


def test_a_traceback_line_stays_json_when_its_message_is_scrubbed() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "kilnbase.errors", logging.ERROR, __file__, 1, "failed on %s", ("/x?token=abc",), sys.exc_info()
        )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "failed on /x?token=[redacted]" and "ValueError: boom" in entry["exception"]


def test_a_request_line_that_cannot_be_written_does_not_fail_the_request(
    json_stdout: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    structured.configure_logging("info", json_stdout)
    json_stdout.close()
    structured.log_request({"method": "GET", "path": "/a", "status": 200})  # no exception
    assert "Logging error" in capsys.readouterr().err  # reported by logging's own handler


def test_a_request_line_is_remembered_by_its_texts_and_the_kinds_of_its_numbers() -> None:
    formatter = JsonFormatter()
    plain = {"method": "GET", "path": "/x", "status": 200, "duration_ms": 1.5, "role": "anon"}
    odd = dict(plain, status="token=abc")  # the same texts, but a status that is text (and a secret)
    extra = dict(plain, note="password=abc")  # a field the middleware does not write
    for fields in (plain, odd, extra, plain, odd, extra):
        line = structured.request_line(formatter, 1_700_000_000.5, fields)
        assert line == formatter.line(1_700_000_000.5, "info", "kilnbase.request", "request", fields)
        assert "abc" not in line and json.loads(line)["path"] == "/x"
    clean = structured._clean(odd)
    assert "abc" not in formatter.line(1.0, "info", "r", "request", odd, clean=clean)


class CountingStream(io.StringIO):
    """A stream that counts its writes."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _request(path: str) -> dict[str, object]:
    return {"method": "GET", "path": path, "status": 200, "duration_ms": 0.25, "role": "anon"}


@pytest.mark.anyio
async def test_request_lines_of_a_running_server_are_written_together_and_in_order() -> None:
    stream = CountingStream()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, structured._json_handler)
    try:
        structured.configure_logging("info", stream)
        for index in range(3):
            structured.log_request(_request(f"/r/{index}"))
        assert stream.getvalue() == ""  # they wait for the others of the next few milliseconds
        await asyncio.sleep(structured.LINE_WAIT_SECONDS * 3)
        assert [json.loads(line)["path"] for line in stream.getvalue().splitlines()] == [
            "/r/0",
            "/r/1",
            "/r/2",
        ]
        assert stream.writes == 1
        # Any other line comes after the request lines logged before it, which are written first.
        structured.log_request(_request("/r/3"))
        logging.getLogger("kilnbase.test").warning("after the request")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [line.get("path", line["message"]) for line in lines[3:]] == ["/r/3", "after the request"]
        # Shutting down writes what waits; too many waiting are written without waiting.
        structured.log_request(_request("/r/4"))
        structured.write_waiting_lines()
        assert json.loads(stream.getvalue().splitlines()[-1])["path"] == "/r/4"
        before = len(stream.getvalue().splitlines())
        for index in range(structured.MAX_WAITING_LINES):
            structured.log_request(_request(f"/many/{index}"))
        assert len(stream.getvalue().splitlines()) == before + structured.MAX_WAITING_LINES
    finally:
        structured.write_waiting_lines()
        root.handlers[:], root.level, structured._json_handler = saved


def test_the_app_writes_the_request_lines_that_wait_when_it_stops(
    json_stdout: io.StringIO, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(structured, "LINE_WAIT_SECONDS", 3600.0)  # only the shutdown writes them
    structured.configure_logging("info", json_stdout)
    # Any other line writes the waiting ones first: quiet the client's, and the MCP SDK's (its server is built
    # after startup, so its "started" line may come after the request).
    for name in ("httpx", "mcp"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.WARNING)
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/health").status_code == 200
        assert '"path":"/api/health"' not in json_stdout.getvalue()
    paths = [json.loads(line).get("path") for line in json_stdout.getvalue().splitlines()]
    assert paths.count("/api/health") == 1
