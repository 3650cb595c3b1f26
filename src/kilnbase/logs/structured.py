"""JSON log lines, one object per line, with credentials scrubbed from whatever is logged.

Routes never log headers or bodies; the scrubber is the second line of defence, so that an API key, an
anon key, a JWT or a password in a URL cannot reach a log file even by mistake.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson

_SECRET_PATTERNS = [
    re.compile(r"ik_[0-9a-fA-F]{16,}"),
    re.compile(r"anon_[0-9a-fA-F]{16,}"),
    re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+"),
    re.compile(r"(?i)(password|passwd|secret|api[_-]?key|token)=([^&\s]+)"),
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
    #: The formatted second of the last record, (second, text): one line per request must not pay strftime.
    _stamp: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        second, stamp = self._stamp
        if int(record.created) != second:
            second = int(record.created)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._stamp = (second, stamp)
        entry: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return scrub(orjson.dumps(entry, default=str).decode())


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
