"""Bucket names and object keys: what is allowed, checked before anything touches a database or a disk.

A key never becomes a file path (the local backend names files by blob id), so a key cannot escape its bucket
whatever it holds; the rules below refuse what would be unsafe or ambiguous anywhere else too (an S3 store,
a download's file name, a log line): `.`/`..` segments, absolute keys, control characters, backslashes,
invalid UTF-8, and keys over 1024 bytes (S3's limit).
"""

from __future__ import annotations

import re
import secrets
import time
from urllib.parse import unquote_to_bytes

from kilnbase.http.errors import ApiError

BUCKET_NAME = re.compile(r"[a-zA-Z0-9_-]{1,63}")
MAX_KEY_BYTES = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


_KEY_RULES = (
    f"Use a key of at most {MAX_KEY_BYTES} bytes of UTF-8, e.g. images/cat.png: no leading '/', backslash, "
    "control character or '.'/'..' segment."
)
_KEY_REQUIRED = "Put the object's key after /objects/ in the path, e.g. .../objects/images/cat.png."


def invalid(message: str, next_actions: str) -> ApiError:
    return ApiError(400, "STORAGE_INVALID_PARAMETER", message, next_actions)


def bucket_name(name: str) -> str:
    if not BUCKET_NAME.fullmatch(name):
        raise invalid(
            "Invalid bucket name. Use only letters, numbers, hyphens, and underscores (1 to 63 characters).",
            "Please check the bucket name, it must be a valid bucket name",
        )
    return name


def object_key(key: str) -> str:
    """`key` if it is a safe object key, else 400."""
    if not key:
        raise invalid("Object key is required", _KEY_REQUIRED)
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise invalid(f"Invalid key. Keys are at most {MAX_KEY_BYTES} bytes of UTF-8.", _KEY_RULES)
    if key.startswith("/") or "\\" in key:
        raise invalid('Invalid key. Cannot start with "/" or contain a backslash.', _KEY_RULES)
    if _CONTROL.search(key) or "\ufffd" in key:
        raise invalid("Invalid key. Control characters and invalid UTF-8 are not allowed.", _KEY_RULES)
    if any(segment in (".", "..") for segment in key.split("/")):
        raise invalid('Invalid key. Cannot use "." or ".." as a path segment.', _KEY_RULES)
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid("Invalid key. Keys must be valid UTF-8.", _KEY_RULES) from None
    return key


def key_from_raw_path(raw_path: bytes, marker: bytes) -> str:
    """The object key after `marker` in the undecoded request path, percent-decoded strictly as UTF-8 (the
    server's own decoding replaces invalid bytes, which would make two different keys one)."""
    _, found, encoded = raw_path.partition(marker)
    if not found:
        raise invalid("Object key is required", _KEY_REQUIRED)
    try:
        return unquote_to_bytes(encoded).decode("utf-8")
    except UnicodeDecodeError:
        raise invalid("Invalid key. Keys must be valid UTF-8.", _KEY_RULES) from None


def generated_key(filename: str) -> str:
    """InsForge's server-generated key: `<sanitized base>-<milliseconds>-<random><extension>`."""
    name = filename.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    dot = name.rfind(".")
    extension = name[dot:] if dot > 0 else ""
    if not re.fullmatch(r"\.[A-Za-z0-9]{1,16}", extension):
        extension = ""
    base = name[:dot] if dot > 0 else name
    sanitized = re.sub(r"[^a-zA-Z0-9_-]", "-", base)[:32] or "file"
    return f"{sanitized}-{int(time.time() * 1000)}-{secrets.token_hex(3)}{extension}"
