"""A send request's fields, checked: InsForge's rules (`sendPayloadSchema` in
`backend/src/api/routes/messaging/index.routes.ts`, then `MessagingQueueService.enqueue`), in its order and
words, and bounded where InsForge is not.

InsForge's order: the body's types (`field: reason`, 400 `INVALID_INPUT`); then `sms` and `push`, which
are 501 `NOT_IMPLEMENTED` ("Channel 'sms' is not supported in Phase 1"); then an email without `to`,
`subject` or `body` (400 "Missing required fields"). Beyond InsForge's:

- `to` is one valid email address (InsForge sends whatever string it is given: `a@x.io, b@y.io` would reach
  both), one that a mail header reads as itself (not `root,b@y.io`, two recipients), stored trimmed and
  lower-cased; at most 254 characters.
- `subject` is one line of at most 500 characters (a line break could start a header of the caller's
  choosing); `body` at most 256 KiB of text; `metadata` a JSON object of at most 16 KiB; `idempotencyKey`
  1 to 255 printable characters.
- A field the API does not know is refused (a misspelt `subjet` would otherwise read as a missing subject),
  and so is text holding the NUL character (Postgres cannot store it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from kilnbase.email.addresses import is_one_mailbox, normalize_email
from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import FIX_FIELDS

CHANNELS = ("email", "sms", "push")
FIELDS = frozenset({"channel", "to", "subject", "body", "idempotencyKey", "metadata"})
MAX_SUBJECT = 500
MAX_BODY = 256 * 1024
MAX_METADATA_BYTES = 16 * 1024
MAX_IDEMPOTENCY_KEY = 255
#: Line breaks of any kind a header could be split at, and the other control characters.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


@dataclass(frozen=True)
class Message:
    """A message to queue: an email with its recipient, subject and body, checked."""

    channel: str
    to: str
    subject: str
    body: str
    idempotency_key: str | None
    metadata: dict[str, Any] | None

    def payload(self) -> dict[str, Any]:
        """What the outbox keeps (InsForge's payload, without the key, which has its own column)."""
        stored: dict[str, Any] = {"to": self.to, "subject": self.subject, "body": self.body}
        if self.metadata is not None:
            stored["metadata"] = self.metadata
        return stored

    def same_as(self, payload: Mapping[str, Any], channel: str) -> bool:
        """InsForge's `isPayloadEqual`: the same channel, recipient, subject and body (metadata aside)."""
        return (channel, payload.get("to"), payload.get("subject") or "", payload.get("body") or "") == (
            self.channel,
            self.to,
            self.subject,
            self.body,
        )


def read(body: Mapping[str, Any]) -> Message:
    """The message a send request asks for, or the 400 (or 501) InsForge answers."""
    problems = [f"{str(key)[:64]}: not a field of a message" for key in body if key not in FIELDS]
    channel = body.get("channel")
    if "channel" not in body:
        problems.append("channel: Required")
    elif channel not in CHANNELS:
        problems.append("channel: Invalid enum value. Expected 'email' | 'sms' | 'push'")
    to = body.get("to")
    if "to" not in body:
        problems.append("to: Required")
    elif not isinstance(to, str) or not to:
        problems.append("to: a non-empty string")
    for key in ("subject", "body", "idempotencyKey"):
        if body.get(key) is not None and not isinstance(body[key], str):
            problems.append(f"{key}: Expected string")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        problems.append("metadata: Expected object")
    if problems:
        raise ApiError(400, "INVALID_INPUT", ", ".join(problems), FIX_FIELDS)
    if channel in ("sms", "push"):
        raise ApiError(
            501,
            "NOT_IMPLEMENTED",
            f"Channel '{channel}' is not supported in Phase 1",
            "Send the message by email (channel: 'email'); SMS and push are not available yet.",
        )
    subject, text = body.get("subject"), body.get("body")
    missing = [key for key, value in (("to", to), ("subject", subject), ("body", text)) if not value]
    if missing:
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"Missing required fields: {', '.join(missing)}",
            "An email needs to, subject and body (the body is HTML).",
        )
    assert isinstance(to, str) and isinstance(subject, str) and isinstance(text, str)
    return _bounded(to, subject, text, body.get("idempotencyKey"), metadata)


def _bounded(to: str, subject: str, text: str, key: str | None, metadata: dict[str, Any] | None) -> Message:
    problems: list[str] = []
    try:
        address = normalize_email(to)
    except ValueError:
        address = ""
    if not address or not is_one_mailbox(address):
        problems.append("to: one valid email address (at most 254 characters)")
    if len(subject) > MAX_SUBJECT or _CONTROL.search(subject):
        problems.append(f"subject: one line of at most {MAX_SUBJECT} characters")
    if len(text) > MAX_BODY or "\x00" in text:
        problems.append(f"body: at most {MAX_BODY} characters, without NUL")
    if key is not None and (not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or _CONTROL.search(key)):
        problems.append(f"idempotencyKey: 1 to {MAX_IDEMPOTENCY_KEY} printable characters")
    if metadata is not None:
        encoded = orjson.dumps(metadata)
        if len(encoded) > MAX_METADATA_BYTES or b"\\u0000" in encoded:
            problems.append(f"metadata: a JSON object of at most {MAX_METADATA_BYTES} bytes, without NUL")
    if problems:
        raise ApiError(400, "INVALID_INPUT", ", ".join(problems), FIX_FIELDS)
    return Message("email", address, subject, text, key, metadata)
