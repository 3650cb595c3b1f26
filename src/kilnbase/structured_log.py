"""JSON log lines, one object per line, with credentials scrubbed from whatever is logged.

Routes never log headers or bodies; the scrubber is the second line of defence, so that an API key, an
anon key, a JWT or a password in a URL cannot reach a log file even by mistake.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any, TextIO

import orjson

_SECRET_PATTERNS = [
    re.compile(r"ik_[0-9a-fA-F]{16,}"),
    re.compile(r"anon_[0-9a-fA-F]{16,}"),
    re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+"),
    re.compile(r"(?i)(password|passwd|secret|api[_-]?key|token)=([^&\s\"\\]+)"),
    re.compile(r"(?i)(postgres(?:ql)?://[^:/\s]+:)([^@\s]+)(@)"),
]

#: Every pattern above needs one of these substrings (the last ones in any case), so a line with none of them,
#: which is most lines, is returned as it is: plain substring tests cost a tenth of the patterns.
_EXACT_HINTS = ("ik_", "anon_", "eyJ")
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
        second, stamp = self._stamp
        if int(created) != second:
            second = int(created)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._stamp = (second, stamp)
        entry: dict[str, Any] = {
            "time": f"{stamp}.{int(created % 1 * 1000):03d}Z",
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
#: `_clean`'s answers by the texts of a request line's fields; emptied when full (paths are the client's).
_clean_texts: dict[tuple[Any, ...], bool] = {}
#: The fields of the line the request-context middleware writes for every request.
_REQUEST_FIELDS = frozenset({"method", "path", "status", "duration_ms", "role"})
_CLEAN_TEXTS_SIZE = 4096


def _clean(fields: dict[str, Any]) -> bool:
    """Whether a request line with these fields cannot hold a secret, decided from their texts alone and
    remembered by them: `scrub`'s quick check reads the whole line, which costs a third of writing it, and
    request lines repeat the same few methods, paths and roles with other numbers.

    A line is the fixed fields (time, level, logger, message: none holds a hint), then these; the hints
    are letters, digits, `_` and `-`, so none spans two JSON tokens and the line holds one exactly when the
    names and string values, written as JSON, do. Numbers never do; any other value (whose text only
    `default=str` knows) is not decided here: the line is scrubbed.

    The middleware's own line (`_REQUEST_FIELDS`) is looked up by its three texts and the kinds of its two
    numbers before anything is walked: the answer depends on nothing else."""
    request_line = fields.keys() == _REQUEST_FIELDS
    key: tuple[Any, ...] = ()
    if request_line:
        key = (
            fields["method"],
            fields["path"],
            fields["role"],
            fields["status"].__class__,
            fields["duration_ms"].__class__,
        )
        known = _clean_texts.get(key)
        if known is not None:
            return known
    texts: list[str] = []
    for name, value in fields.items():
        texts.append(name)
        kind = value.__class__
        if kind is str:
            texts.append(value)
        elif kind is not int and kind is not float:
            return False
    if not request_line:
        key = tuple(texts)
        known = _clean_texts.get(key)
        if known is not None:
            return known
    if len(_clean_texts) >= _CLEAN_TEXTS_SIZE:
        _clean_texts.clear()
    clean = _clean_texts[key] = not _may_hold_secret(orjson.dumps(texts).decode())
    return clean


def log_request(fields: dict[str, Any]) -> None:
    """The one line per request (logger `kilnbase.request`, level INFO), the server's most frequent log call.

    When the JSON handler of `configure_logging` is the only destination, as configured (no filters, its
    level, the logger hierarchy untouched), the line is formatted and written straight to its stream:
    logging's general path (a record of two dozen attributes, a formatter, the hierarchy) costs more than
    planning a records query does. Any other set-up (a test capturing records, an application's own
    handlers), and any failure to write, takes the ordinary path, whose handler reports the failure."""
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
        formatter = handler.formatter
        assert isinstance(formatter, JsonFormatter)
        line = formatter.line(
            time.time(), "info", "kilnbase.request", "request", fields, clean=_clean(fields)
        )
        try:
            with handler.lock:  # type: ignore[union-attr]  # (created with the handler)
                handler.stream.write(line + "\n")
                handler.stream.flush()
            return
        except Exception:  # noqa: S110 (the ordinary path below reports it, as logging does)
            pass
    # `Logger.info` without its caller lookup (a stack walk), which nothing here reads.
    request_log.handle(
        request_log.makeRecord(
            request_log.name, logging.INFO, __file__, 0, "request", (), None, extra={"fields": fields}
        )
    )


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """JSON lines on `stream` (standard output by default) for every logger, at `level`."""
    global _json_handler
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    _json_handler = handler
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
