"""A schedule's fields as a request gives them, checked and bounded before anything is stored.

InsForge's request schema: `name` (3 characters or more), `cronSchedule` (see `cadence`), `functionUrl` (a
URL), `httpMethod` (GET, POST, PUT, PATCH or DELETE), `headers` (names to string values, which may hold
`${{secrets.KEY}}`), `body` (a JSON object), and on update any of them plus `isActive`. Kilnbase bounds
each (lengths, header count and size, body size), takes only http and https URLs (or a path on this
server, `/functions/:slug`), and refuses fields it does not know: a misspelt field would otherwise be
ignored without a word. Every problem is reported at once, as `field: reason`, as InsForge's 400 is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import orjson

from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import FIX_FIELDS
from kilnbase.schedules import cadence

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
METHODS: tuple[str, ...] = get_args(Method)
MIN_NAME = 3
MAX_NAME = 255
MAX_URL = 2048
MAX_HEADERS = 50
MAX_HEADER_NAME = 256
MAX_HEADER_VALUE = 8 * 1024
MAX_HEADERS_BYTES = 32 * 1024
MAX_BODY_BYTES = 64 * 1024
#: `${{secrets.KEY}}` in a header value: the project secret KEY, put in at each run.
SECRET_PLACEHOLDER = re.compile(r"\$\{\{secrets\.([^}]+)\}\}")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
#: Headers the HTTP client sets itself: given by hand, they would break the request's framing.
_FRAMING = frozenset({"content-length", "transfer-encoding"})
_FIELDS = ("name", "cronSchedule", "functionUrl", "httpMethod", "headers", "body")
#: What an update may set: the fields, and whether the schedule runs.
UPDATE_FIELDS = (*_FIELDS, "isActive")


@dataclass(frozen=True)
class Changes:
    """The fields a request sets (None: not given; on create every required one is given)."""

    name: str | None = None
    cadence: cadence.Cadence | None = None
    function_url: str | None = None
    http_method: str | None = None
    headers: dict[str, str] | None = None
    body: dict[str, Any] | None = None
    body_given: bool = False
    is_active: bool | None = None

    @property
    def changes_job(self) -> bool:
        """Whether anything but `isActive` is set (InsForge schedules the job anew then)."""
        return any(
            value is not None
            for value in (self.name, self.cadence, self.function_url, self.http_method, self.headers)
        ) or (self.body_given)

    def secret_keys(self) -> list[str]:
        return secret_keys(self.headers or {})

    def summary(self) -> dict[str, Any]:
        """What changed, for the audit trail: header names only (their values may be credentials)."""
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = self.name
        if self.cadence is not None:
            out["cronSchedule"] = self.cadence.text
        if self.function_url is not None:
            out["functionUrl"] = self.function_url
        if self.http_method is not None:
            out["httpMethod"] = self.http_method
        if self.headers is not None:
            out["headerNames"] = sorted(self.headers)
        if self.body_given:
            out["bodyBytes"] = len(orjson.dumps(self.body)) if self.body is not None else 0
        if self.is_active is not None:
            out["isActive"] = self.is_active
        return out


def secret_keys(headers: Mapping[str, str]) -> list[str]:
    """The secret keys the header values name, each once, in order."""
    found: dict[str, None] = {}
    for value in headers.values():
        for match in SECRET_PLACEHOLDER.finditer(value):
            found[match.group(1)] = None
    return list(found)


def _url_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return "The function URL must be a valid URL."
    if len(value) > MAX_URL:
        return f"at most {MAX_URL} characters"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return "The function URL must be a valid URL (no spaces or control characters)."
    if value.startswith("/"):
        return None if not value.startswith("//") else "The function URL must be a valid URL."
    try:
        parts = urlsplit(value)
        host = parts.hostname
        _ = parts.port  # (raises on a port that is not a number)
    except ValueError:
        return "The function URL must be a valid URL."
    if parts.scheme not in ("http", "https"):
        return "The function URL must use http or https."
    if not host:
        return "The function URL must be a valid URL (it names no host)."
    return None


def _headers_problems(value: Any) -> list[str]:
    if not isinstance(value, dict):
        return ["headers: must be an object of header names to string values"]
    problems = []
    if len(value) > MAX_HEADERS:
        problems.append(f"headers: at most {MAX_HEADERS} headers")
    size = 0
    for name, header in value.items():
        if not _TOKEN.match(name) or len(name) > MAX_HEADER_NAME:
            problems.append(f"headers.{name[:64]}: not a valid header name")
        elif name.lower() in _FRAMING:
            problems.append(f"headers.{name}: set by the HTTP client itself; leave it out")
        if not isinstance(header, str):
            problems.append(f"headers.{name[:64]}: must be a string")
            continue
        if len(header) > MAX_HEADER_VALUE:
            problems.append(f"headers.{name[:64]}: at most {MAX_HEADER_VALUE} characters")
        if any(ch in header for ch in "\r\n\0"):
            problems.append(f"headers.{name[:64]}: no line breaks or NUL characters")
        size += len(name) + len(header.encode())
    if size > MAX_HEADERS_BYTES:
        problems.append(f"headers: at most {MAX_HEADERS_BYTES} bytes in all")
    return problems


def _body_problem(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        return "body: must be a JSON object"
    if len(orjson.dumps(value)) > MAX_BODY_BYTES:
        return f"body: at most {MAX_BODY_BYTES} bytes as JSON"
    return None


def read(body: Mapping[str, Any], *, creating: bool) -> Changes:
    """The request's fields, checked; 400 `INVALID_INPUT` listing every problem, or (for a cron expression
    of the right shape that does not parse) 400 `SCHEDULE_INVALID_CRON`."""
    allowed = _FIELDS if creating else UPDATE_FIELDS
    problems = [f"{name[:64]}: not a field of a schedule" for name in body if name not in allowed]
    if creating:
        problems += [f"{name}: Required" for name in _FIELDS[:4] if body.get(name) is None]
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not MIN_NAME <= len(name.strip()) <= MAX_NAME):
        problems.append(
            f"name: Schedule name must be at least {MIN_NAME} characters long (and at most {MAX_NAME})"
        )
    cron = body.get("cronSchedule")
    if cron is not None and (not isinstance(cron, str) or not cadence.well_formed(cron)):
        problems.append(f"cronSchedule: {cadence.SHAPE_MESSAGE}")
    url = body.get("functionUrl")
    if url is not None and (problem := _url_problem(url)):
        problems.append(f"functionUrl: {problem}")
    method = body.get("httpMethod")
    if method is not None and method not in METHODS:
        problems.append(f"httpMethod: must be one of {', '.join(METHODS)}")
    headers = body.get("headers")
    if headers is not None:
        problems += _headers_problems(headers)
    if problem := _body_problem(body.get("body")):
        problems.append(problem)
    active = body.get("isActive")
    if active is not None and not isinstance(active, bool):
        problems.append("isActive: must be true or false")
    if problems:
        raise ApiError(400, "INVALID_INPUT", ", ".join(problems), FIX_FIELDS)
    return Changes(
        name=name.strip() if isinstance(name, str) else None,
        cadence=cadence.parse(cron) if isinstance(cron, str) else None,
        function_url=url,
        http_method=method,
        headers=dict(headers) if headers is not None else None,
        body=body.get("body"),
        body_given="body" in body,
        is_active=active,
    )
