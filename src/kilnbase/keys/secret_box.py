"""Authenticated encryption (AES-256-GCM) for secrets at rest, with the project's own encryption key.

The stored form is `v1:` + base64(nonce || ciphertext+tag). The key never comes from the JWT secret
(see `server/project_keys.py`), so rotating one never breaks the other.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_PREFIX = "v1:"
_NONCE_BYTES = 12


class DecryptionError(ValueError):
    """The ciphertext was not made with this key, or was altered."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the encryption key must be 32 bytes")
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: str, *, context: str = "") -> str:
        """Encrypt; `context` (say, the secret's name) is bound to the ciphertext as associated data."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode() or None)
        return _PREFIX + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, stored: str, *, context: str = "") -> str:
        if not stored.startswith(_PREFIX):
            raise DecryptionError("unknown ciphertext format")
        try:
            raw = base64.b64decode(stored[len(_PREFIX) :], validate=True)
            return self._aead.decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode() or None
            ).decode()
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError("cannot decrypt: wrong key or altered data") from exc
