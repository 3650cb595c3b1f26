"""Secrets at rest: authenticated encryption with the project's own key."""

from __future__ import annotations

import os

import pytest

from kilnbase.keys.secret_box import DecryptionError, SecretBox


def test_round_trip_and_fresh_nonce() -> None:
    box = SecretBox(os.urandom(32))
    first, second = box.encrypt("smtp-password", context="SMTP"), box.encrypt("smtp-password", context="SMTP")
    assert first != second and "smtp-password" not in first
    assert box.decrypt(first, context="SMTP") == "smtp-password"


def test_wrong_key_context_or_tampering_is_refused() -> None:
    box = SecretBox(os.urandom(32))
    stored = box.encrypt("value", context="A")
    with pytest.raises(DecryptionError):
        SecretBox(os.urandom(32)).decrypt(stored, context="A")
    with pytest.raises(DecryptionError):
        box.decrypt(stored, context="B")
    tampered = stored[:-4] + ("AAAA" if not stored.endswith("AAAA") else "BBBB")
    with pytest.raises(DecryptionError):
        box.decrypt(tampered, context="A")
    with pytest.raises(DecryptionError):
        box.decrypt("plain text", context="A")


def test_key_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SecretBox(b"short")
