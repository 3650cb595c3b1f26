"""Signed download URLs: no credential needed, an expiry from 1 second to 7 days, and nothing in them can be
changed (bucket, key, expiry or signature: any change fails the check, 403).

The signature is HMAC-SHA256 over the bucket, the key and the expiry, with a key derived from the project's
JWT secret for this one purpose (so it is never the JWT key itself, and rotating the JWT secret revokes
every signed URL). Compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from kilnbase.storage.whole_numbers import is_whole_number

MIN_SECONDS = 1
MAX_SECONDS = 7 * 24 * 3600
DEFAULT_SECONDS = 3600
_CONTEXT = b"kilnbase:storage:signed-url:v1"


def clamp_expiry(seconds: float | None) -> int:
    if seconds is None:
        return DEFAULT_SECONDS
    return int(min(max(int(seconds), MIN_SECONDS), MAX_SECONDS))


@dataclass(frozen=True)
class SignedUrl:
    query: str
    expires_at: int


class UrlSigner:
    def __init__(self, project_secret: str) -> None:
        self._key = hmac.new(project_secret.encode(), _CONTEXT, hashlib.sha256).digest()

    def _mac(self, bucket: str, key: str, expires: int) -> str:
        message = f"{bucket}\n{key}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, bucket: str, key: str, seconds: int, now: float | None = None) -> SignedUrl:
        expires = int(now if now is not None else time.time()) + seconds
        return SignedUrl(f"expires={expires}&signature={self._mac(bucket, key, expires)}", expires)

    def verify(
        self, bucket: str, key: str, expires: str, signature: str, now: float | None = None
    ) -> str | None:
        """None when the URL is good; else why it is not."""
        if not is_whole_number(expires) or len(expires) > 12:
            return "The signed URL is malformed."
        expected = self._mac(bucket, key, int(expires))
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            return "The signature does not match this object."
        if int(expires) < (now if now is not None else time.time()):
            return "The signed URL has expired."
        return None
