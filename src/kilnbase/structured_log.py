"""JSON log lines, one object per line, with credentials scrubbed from whatever is logged.

Routes never log headers or bodies; the scrubber is the second line of defence, so that an API key, an
anon key, an agent key, a JWT or a password in a URL cannot reach a log file even by mistake.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import math
import re
import sys
import time
from collections import deque
from typing import Any, TextIO

import orjson

_SECRET_PATTERNS = [
    re.compile(r"ik_[0-9a-fA-F]{16,}"),
    re.compile(r"anon_[0-9a-fA-F]{16,}"),
    re.compile(r"kba_[0-9a-fA-F]{16,}"),
    re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+"),
    re.compile(r"(?i)(password|passwd|secret|api[_-]?key|token)=([^&\s\"\\]+)"),
    re.compile(r"(?i)(postgres(?:ql)?://[^:/\s]+:)([^@\s]+)(@)"),
]

#: Every pattern above needs one of these substrings (the last ones in any case), so a line with none of them,
#: which is most lines, is returned as it is: plain substring tests cost a tenth of the patterns.
_EXACT_HINTS = ("ik_", "anon_", "kba_", "eyJ")
_FOLDED_HINTS = ("password", "passwd", "secret", "apikey", "api_key", "api-key", "token", "postgres")


def _may_hold_secret(text: str) -> bool:
    if any(hint in text for hint in _EXACT_HINTS):
        return True
    folded = text.casefold()  # folds at least as much as the patterns' (?i)
    return any(hint in folded for hint in _FOLDED_HINTS)


def scrub(text: str) -> str:
    if not _may_hold_secret(text):
        return text
    for pattern in _SECRET_PATTERNS:
        if pattern.groups == 2:
            text = pattern.sub(lambda m: f"{m[1]}=[redacted]", text)
        elif pattern.groups == 3:
            text = pattern.sub(lambda m: f"{m[1]}[redacted]{m[3]}", text)
        else:
            text = pattern.sub("[redacted]", text)
    return text


class JsonFormatter(logging.Formatter):
    #: The formatted second of the last line, (second, text): one line per request must not pay strftime.
    _stamp: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        extra = dict(fields) if isinstance(fields, dict) else {}
        if record.exc_info:
            extra["exception"] = self.formatException(record.exc_info)
        return self.line(record.created, record.levelname.lower(), record.name, record.getMessage(), extra)

    def time_text(self, created: float) -> str:
        """`created` as UTC to the millisecond, ISO 8601 with a `Z`."""
        second, stamp = self._stamp
        if int(created) != second:
            second = int(created)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._stamp = (second, stamp)
        return f"{stamp}.{int(created % 1 * 1000):03d}Z"

    def line(
        self,
        created: float,
        level: str,
        logger: str,
        message: str,
        fields: dict[str, Any] | None,
        *,
        clean: bool = False,
    ) -> str:
        """The JSON line; `clean`: the caller knows that no text in it can hold a secret (`_clean`), so
        `scrub` would return it unchanged and is not asked."""
        entry: dict[str, Any] = {
            "time": self.time_text(created),
            "level": level,
            "logger": logger,
            "message": message,
        }
        if fields:
            entry.update(fields)
        text = orjson.dumps(entry, default=str).decode()
        return text if clean else scrub(text)


#: The handler `configure_logging` installed, while it is the root logger's only one.
_json_handler: logging.StreamHandler[Any] | None = None
request_log = logging.getLogger("kilnbase.request")
_kilnbase_log = logging.getLogger("kilnbase")
#: `_clean`'s answers by the names and texts of a line's fields; emptied when full (paths are the client's).
_clean_texts: dict[tuple[str, ...], bool] = {}
#: The fields of the line the request-context middleware writes for every request.
_REQUEST_FIELDS = frozenset({"method", "path", "status", "duration_ms", "role"})
#: A request line's fixed text by its method, path and role: what comes before its status and after its
#: duration, or None when the line may hold a secret (it is then written whole and scrubbed); emptied when
#: full.
_request_parts: dict[tuple[str, str, str], tuple[str, str] | None] = {}
_UNDECIDED = ("", "")
_MEMO_SIZE = 4096


def _clean(fields: dict[str, Any]) -> bool:
    """Whether a line with these fields cannot hold a secret, decided from their texts alone and remembered
    by them: `scrub`'s quick check reads the whole line, which costs a third of writing it.

    A line is the fixed fields (time, level, logger, message: none holds a hint), then these; the hints
    are letters, digits, `_` and `-`, so none spans two JSON tokens and the line holds one exactly when the
    names and string values, written as JSON, do. Numbers never do; any other value (whose text only
    `default=str` knows) is not decided here: the line is scrubbed."""
    texts: list[str] = []
    for name, value in fields.items():
        texts.append(name)
        kind = value.__class__
        if kind is str:
            texts.append(value)
        elif kind is not int and kind is not float:
            return False
    key = tuple(texts)
    known = _clean_texts.get(key)
    if known is None:
        if len(_clean_texts) >= _MEMO_SIZE:
            _clean_texts.clear()
        known = _clean_texts[key] = not _may_hold_secret(orjson.dumps(texts).decode())
    return known


def request_line(formatter: JsonFormatter, created: float, fields: dict[str, Any]) -> str:
    """The request-context middleware's line for `fields`: what `formatter.line` writes for them, scrubbed.

    The middleware's own fields (`_REQUEST_FIELDS`: three texts, a whole status and a finite duration) make
    a line whose text is fixed but for the time and the two numbers, and requests repeat the same few
    methods, paths and roles: that text is kept by the three texts, and the line is put together around
    them (a number's JSON is Python's own text for an int and a finite float). Any other fields take the
    formatter's way."""
    status, duration = fields.get("status"), fields.get("duration_ms")
    if (
        status.__class__ is int
        and duration.__class__ is float
        and 0.0 <= duration < math.inf
        and fields.keys() == _REQUEST_FIELDS
    ):
        key = (fields["method"], fields["path"], fields["role"])
        parts = _request_parts.get(key, _UNDECIDED)
        if parts is _UNDECIDED:
            parts = _request_parts_for(formatter, key)
        if parts is not None:
            stamp = formatter.time_text(created)
            return f'{{"time":"{stamp}",{parts[0]}"status":{status},"duration_ms":{duration!r}{parts[1]}'
    return formatter.line(created, "info", "kilnbase.request", "request", fields, clean=_clean(fields))


def _request_parts_for(formatter: JsonFormatter, key: tuple[str, str, str]) -> tuple[str, str] | None:
    """The fixed text of a request line with these texts, cut from a line the formatter wrote (None when it
    may hold a secret), remembered."""
    method, path, role = key
    parts: tuple[str, str] | None = None
    if method.__class__ is str and path.__class__ is str and role.__class__ is str:
        fields = {"method": method, "path": path, "status": 0, "duration_ms": 0.5, "role": role}
        if _clean(fields):
            line = formatter.line(0.0, "info", "kilnbase.request", "request", fields, clean=True)
            head, rest = line.split(',"status":0,', 1)
            parts = (head[head.index('"level"') :] + ",", rest[len('"duration_ms":0.5') :])
    if len(_request_parts) >= _MEMO_SIZE:
        _request_parts.clear()
    _request_parts[key] = parts
    return parts


#: How long a request line may wait to be written with the lines of other requests: one write, and one
#: pass that formats them all, for every few milliseconds of requests rather than inside each one. (Formatting
#: and writing inside a request costs about three times what the same work costs done together.)
LINE_WAIT_SECONDS = 0.02
#: Lines that may wait at most: the next one writes them all.
MAX_WAITING_LINES = 512


class _WaitingLines:
    """Request lines (their time and fields) not written yet, and the timer that writes them.

    Written in order, before any other line the JSON handler writes (`_JsonHandler`), when the app shuts
    down (`write_waiting_lines`), at exit, and at once when no event loop runs. A deque: a line logged from
    another thread while they are written is never lost."""

    def __init__(self) -> None:
        self.lines: deque[tuple[float, dict[str, Any]]] = deque()
        self.timer: asyncio.TimerHandle | None = None

    def add(self, created: float, fields: dict[str, Any]) -> None:
        self.lines.append((created, fields))
        if self.timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.write()
                return
            self.timer = loop.call_later(LINE_WAIT_SECONDS, self.write)
        elif len(self.lines) >= MAX_WAITING_LINES:
            self.write()

    def write(self) -> None:
        """Write every waiting line (through logging's ordinary path when the stream refuses them, whose
        handler reports the failure)."""
        self.timer = None
        lines = self.lines
        batch = [lines.popleft() for _ in range(len(lines))]
        if not batch:
            return
        handler = _json_handler
        formatter = handler.formatter if handler is not None else None
        if handler is not None and isinstance(formatter, JsonFormatter):
            text = "".join([request_line(formatter, created, fields) + "\n" for created, fields in batch])
            try:
                with handler.lock:  # type: ignore[union-attr]  # (created with the handler)
                    handler.stream.write(text)
                    handler.stream.flush()
                return
            except Exception:  # noqa: S110 (the ordinary path below reports it, as logging does)
                pass
        for _created, fields in batch:
            _log_record(fields)


_waiting = _WaitingLines()
atexit.register(_waiting.write)


def write_waiting_lines() -> None:
    """Write the request lines that wait (the app calls it when it shuts down)."""
    if _waiting.lines:
        _waiting.write()


def log_request(fields: dict[str, Any]) -> None:
    """The one line per request (logger `kilnbase.request`, level INFO), the server's most frequent log call.

    When the JSON handler of `configure_logging` is the only destination, as configured (no filters, its
    level, the logger hierarchy untouched), the line waits a few milliseconds to be formatted and written
    straight to its stream with the lines of other requests (`_WaitingLines`): logging's general path (a
    record of two dozen attributes, a formatter, the hierarchy) costs more than planning a records query
    does. Any other set-up (a test capturing records, an application's own handlers) takes the ordinary
    path, at once."""
    if not request_log.isEnabledFor(logging.INFO):
        return
    handler = _json_handler
    if (
        handler is not None
        and logging.root.handlers == [handler]
        and not handler.filters
        and handler.level <= logging.INFO
        and not request_log.handlers
        and not request_log.filters
        and request_log.propagate
        and not _kilnbase_log.handlers
        and _kilnbase_log.propagate
    ):
        _waiting.add(time.time(), fields)
        return
    _log_record(fields)


def _log_record(fields: dict[str, Any]) -> None:
    """`Logger.info` without its caller lookup (a stack walk), which nothing here reads."""
    request_log.handle(
        request_log.makeRecord(
            request_log.name, logging.INFO, __file__, 0, "request", (), None, extra={"fields": fields}
        )
    )


class _JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The JSON lines' handler: any other line is written after the request lines that wait."""

    def emit(self, record: logging.LogRecord) -> None:
        write_waiting_lines()
        super().emit(record)


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """JSON lines on `stream` (standard output by default) for every logger, at `level`."""
    global _json_handler
    write_waiting_lines()  # (to the stream they were logged for)
    handler = _JsonHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    _json_handler = handler
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
