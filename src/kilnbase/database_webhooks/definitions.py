"""A webhook's fields as a request gives them, checked: InsForge's rules
(`createDatabaseWebhookRequestSchema`, `updateDatabaseWebhookRequestSchema`), bounded, and every problem
named at once as `field: reason`.

Beyond InsForge's: the URL is `http` or `https` with a host and at most 2048 characters; the secret at most
256 characters; the table name at most 127 (`table`, or `schema.table`); events are listed once each; a field
the API does not know is refused (a misspelt `enable` would otherwise be dropped without a word), and so is
`tableName` in an update (a webhook stays on its table: create another for another table).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import FIX_FIELDS

EVENTS = ("INSERT", "UPDATE", "DELETE")
MAX_NAME = 100
MAX_TABLE_NAME = 127
MAX_URL = 2048
MAX_SECRET = 256
CREATE_FIELDS = frozenset({"name", "tableName", "events", "url", "secret", "enabled"})
UPDATE_FIELDS = frozenset({"name", "events", "url", "secret", "enabled"})


@dataclass(frozen=True)
class WebhookFields:
    """What a request sets; None: not given. `secret_given` tells a `secret: null` (remove it) from none."""

    name: str | None = None
    table_name: str | None = None
    events: tuple[str, ...] | None = None
    url: str | None = None
    secret: str | None = None
    secret_given: bool = False
    enabled: bool | None = None

    def summary(self) -> dict[str, Any]:
        """For the audit log: what was set, the secret only as whether one was."""
        details: dict[str, Any] = {}
        for key, value in (
            ("name", self.name),
            ("tableName", self.table_name),
            ("events", list(self.events) if self.events else None),
            ("url", self.url),
            ("enabled", self.enabled),
        ):
            if value is not None:
                details[key] = value
        if self.secret_given:
            details["secret"] = "set" if self.secret is not None else "removed"
        return details


def read(body: Mapping[str, Any], *, creating: bool) -> WebhookFields:
    """The fields of a create (`creating`: name, tableName, events and url required) or an update."""
    problems: list[str] = []
    known = CREATE_FIELDS if creating else UPDATE_FIELDS
    for key in body:
        if key == "tableName" and not creating:
            problems.append("tableName: a webhook's table cannot be changed (create another webhook)")
        elif key not in known:
            problems.append(f"{str(key)[:64]}: not a field of a database webhook")
    if creating:
        problems += [f"{key}: Required" for key in ("name", "tableName", "events", "url") if key not in body]
    name = _text(body, "name", MAX_NAME, problems)
    table_name = _text(body, "tableName", MAX_TABLE_NAME, problems)
    events = _events(body, problems)
    url = _url(body, problems)
    secret = body.get("secret")
    removing = secret is None and not creating
    fits = isinstance(secret, str) and 1 <= len(secret) <= MAX_SECRET
    if "secret" in body and not removing and not fits:
        or_null = "" if creating else ", or null"
        problems.append(f"secret: a string of 1 to {MAX_SECRET} characters{or_null}")
        secret = None
    enabled = body.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        problems.append("enabled: Expected boolean")
        enabled = None
    if problems:
        raise ApiError(400, "INVALID_INPUT", ", ".join(problems), FIX_FIELDS)
    return WebhookFields(
        name=name,
        table_name=table_name,
        events=events,
        url=url,
        secret=secret,
        secret_given="secret" in body,
        enabled=enabled,
    )


def _text(body: Mapping[str, Any], key: str, most: int, problems: list[str]) -> str | None:
    value = body.get(key)
    if key not in body:
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{key}: a non-empty string")
        return None
    if len(value) > most:
        problems.append(f"{key}: at most {most} characters")
        return None
    return value


def _events(body: Mapping[str, Any], problems: list[str]) -> tuple[str, ...] | None:
    if "events" not in body:
        return None
    value = body["events"]
    if not isinstance(value, list) or not value:
        problems.append("events: At least one event is required (INSERT, UPDATE, DELETE)")
        return None
    bad = [event for event in value if event not in EVENTS]
    if bad:
        problems.append(f"events: each one of {', '.join(EVENTS)}, not {str(bad[0])[:32]!r}")
        return None
    return tuple(event for event in EVENTS if event in value)


def _url(body: Mapping[str, Any], problems: list[str]) -> str | None:
    if "url" not in body:
        return None
    value = body["url"]
    if not isinstance(value, str) or len(value) > MAX_URL:
        problems.append(f"url: Must be a valid URL (http or https, at most {MAX_URL} characters)")
        return None
    try:
        parts = urlsplit(value)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # (a port that is no number raises here)
    except ValueError:
        valid = False
    if not valid or any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        problems.append("url: Must be a valid URL (http or https)")
        return None
    return value
