"""What an upload is, decided from its bytes (the client's claim is trusted only where the bytes say nothing),
and which types a browser would run if shown inline: those are served as attachments.

Detection is `filetype` (magic numbers of the first bytes, pure Python, no libmagic); text formats have no
magic number, so the first 4 KiB are scanned for the markup that makes a page active, as InsForge does.
"""

from __future__ import annotations

import re

import filetype

#: Bytes of an upload kept for detection.
SNIFF_BYTES = 4096
OCTET_STREAM = "application/octet-stream"

UNSAFE_TYPES = frozenset(
    {
        "text/html",
        "image/svg+xml",
        "text/javascript",
        "application/javascript",
        "application/ecmascript",
        "text/ecmascript",
        "application/x-javascript",
        "application/xhtml+xml",
        "application/x-xhtml+xml",
        "text/xml",
        "text/xsl",
        "application/xml",
    }
)
_ACTIVE_MARKUP = (
    b"<html",
    b"<script",
    b"<!doctype html",
    b"<body",
    b"<iframe",
    b"<object",
    b"<form",
)


#: A claim that can be written back as a header: `type/subtype` of RFC 9110 tokens, then parameters, all
#: printable ASCII (a line break or a non-Latin-1 letter would fail every later download's headers).
_MEDIA_NAME = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_WRITABLE_CLAIM = re.compile(rf"{_MEDIA_NAME}/{_MEDIA_NAME}(?:\s*;[\x20-\x7e]*)?")


def essence(content_type: str | None) -> str:
    """`text/html; charset=utf-8` -> `text/html`."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_unsafe(content_type: str | None) -> bool:
    """A type a browser would run if shown inline: those listed, and every XML type (`*/*+xml`, `text/xsl`),
    which a browser renders as an XML document whose XHTML-namespaced `<script>` runs in the origin that
    served it (`application/atom+xml`, `application/rss+xml`, `application/vnd.mozilla.xul+xml`, ...)."""
    kind = essence(content_type)
    return kind in UNSAFE_TYPES or kind.endswith("+xml")


def detect(head: bytes, claimed: str | None) -> str:
    """The type to store for an upload whose first bytes are `head` and whose client said `claimed`."""
    kind = filetype.guess(head) if head else None
    if kind is not None:
        return str(kind.mime)
    lowered = head[:SNIFF_BYTES].lower()
    if b"<svg" in lowered:
        return "image/svg+xml"
    if any(marker in lowered for marker in _ACTIVE_MARKUP):
        return "text/html"
    if lowered.lstrip().startswith(b"<?xml"):
        return "application/xml"
    claim = (claimed or "").strip()
    if (
        not claim
        or len(claim) > 255
        or not _WRITABLE_CLAIM.fullmatch(claim)
        or essence(claim) == "multipart/form-data"
    ):
        return OCTET_STREAM
    return claim
