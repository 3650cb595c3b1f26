"""The cipher of encrypted columns: InsForge's versioned format, one key per version derived from the
project's key, tampering detected, and values turned to text and back as their declared types."""

from __future__ import annotations

import re

import pytest

from kilnbase.keys.column_cipher import (
    STORED_FORMAT,
    ColumnCipher,
    ColumnDecryptionError,
    plain_value,
    text_of,
)

ROOT = bytes(range(32))


def test_a_value_round_trips_in_the_stored_format() -> None:
    cipher = ColumnCipher(ROOT, 1)
    stored = cipher.encrypt("123-45-6789")
    assert re.fullmatch(STORED_FORMAT, stored)
    assert stored.startswith("v1:") and "123-45-6789" not in stored
    assert cipher.encrypt("123-45-6789") != stored  # a fresh IV each time
    assert cipher.decrypt(stored) == "123-45-6789"
    assert cipher.decrypt(cipher.encrypt("")) == ""


def test_each_version_has_its_own_key_and_older_versions_stay_readable() -> None:
    old, new = ColumnCipher(ROOT, 1), ColumnCipher(ROOT, 2)
    written = old.encrypt("x")
    rewritten = new.encrypt("x")
    assert rewritten.startswith("v2:") and new.is_current(rewritten) and not new.is_current(written)
    assert new.decrypt(written) == "x"  # the version-1 key is derived again
    forged = "v1:" + rewritten.split(":", 1)[1]  # version 2's ciphertext relabelled as version 1
    with pytest.raises(ColumnDecryptionError):
        old.decrypt(forged)


def test_altered_values_and_other_keys_are_refused() -> None:
    cipher = ColumnCipher(ROOT, 1)
    stored = cipher.encrypt("secret")
    flipped = stored[:-1] + ("0" if stored[-1] != "0" else "1")
    for bad in (flipped, "plain", "v1:zz", stored.upper()):
        with pytest.raises(ColumnDecryptionError):
            cipher.decrypt(bad)
    with pytest.raises(ColumnDecryptionError):
        ColumnCipher(bytes(32), 1).decrypt(stored)


@pytest.mark.parametrize(
    ("value", "kind", "text", "back"),
    [
        ("abc", "text", "abc", "abc"),
        (5, "text", "5", "5"),
        ({"a": [1, "b"]}, "jsonb", '{"a":[1,"b"]}', {"a": [1, "b"]}),
        ("just a string", "jsonb", '"just a string"', "just a string"),
        (42, "integer", "42", 42),
        ("42", "integer", "42", 42),
        (1.5, "double precision", "1.5", 1.5),
        (True, "boolean", "true", True),
        ("f", "boolean", "false", False),
        ("2024-02-29", "date", "2024-02-29", "2024-02-29"),
        ("4b0c1a4e-5d1f-4a58-9a0e-2f0c7e1d9b11", "uuid", "4b0c1a4e-5d1f-4a58-9a0e-2f0c7e1d9b11", None),
    ],
)
def test_values_become_text_and_come_back_as_their_type(
    value: object, kind: str, text: str, back: object
) -> None:
    assert text_of(value, kind) == text
    assert plain_value(text, kind) == (value if back is None else back)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("forty", "integer"),
        (True, "integer"),
        (2**40, "integer"),
        ("maybe", "boolean"),
        (1, "boolean"),
        ("nope", "uuid"),
        (7, "date"),
        ("Feb 30", "date"),
        ([], "double precision"),
    ],
)
def test_a_value_the_type_refuses_is_a_value_error_in_postgres_words(value: object, kind: str) -> None:
    with pytest.raises(ValueError, match=f"invalid input syntax for type {kind}"):
        text_of(value, kind)
