"""Column-level encryption: AES-256-GCM values in InsForge's versioned text format, one key per version.

A stored value is `v<version>:<iv>:<tag>:<ciphertext>`, all lower-case hex, with a 16-byte IV and a 16-byte
tag (InsForge's `EncryptionManager.encryptVersioned` format, so the CHECK constraint of an encrypted column
reads the same shape). The key of each version is derived from the project's encryption key (the one secrets
at rest use, never the JWT secret) with HKDF-SHA256 and a label naming the purpose and the version, as the
CSRF key is derived from its secret: no other key Kilnbase derives can equal it, and every version's key can
be derived again, so a value written under an older version stays readable while `rotate` rewrites it.

What is encrypted is text: a string as it is, any other JSON value as its JSON text; `plain_value` turns the
text back into the value of the column's declared type (InsForge's casts; a `json` column's value always
goes through JSON, so a JSON string round-trips as a string).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_IV_BYTES = 16
_TAG_BYTES = 16
#: What a stored value looks like; the CHECK constraint of every encrypted column (migration 0300) holds it.
STORED_FORMAT = r"^v[0-9]+:[0-9a-f]{32}:[0-9a-f]{32}:[0-9a-f]*$"
_STORED = re.compile(r"v([0-9]{1,9}):([0-9a-f]{32}):([0-9a-f]{32}):([0-9a-f]*)")


def column_key_label(version: int) -> bytes:
    """HKDF's `info` for one version's key: the purpose and the version, so no two keys coincide."""
    return f"kilnbase:column-encryption:v{version}".encode()


class ColumnDecryptionError(ValueError):
    """A stored value that is not in the format, or was not written with this project's key of its version."""


class ColumnCipher:
    def __init__(self, root_key: bytes, current_version: int) -> None:
        if len(root_key) != 32:
            raise ValueError("the encryption key must be 32 bytes")
        if current_version < 1:
            raise ValueError("the column key version starts at 1")
        self._root = root_key
        self.current_version = current_version
        self._keys: dict[int, AESGCM] = {}

    def _key(self, version: int) -> AESGCM:
        key = self._keys.get(version)
        if key is None:
            derived = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=column_key_label(version)
            ).derive(self._root)
            key = self._keys[version] = AESGCM(derived)
        return key

    def encrypt(self, text: str) -> str:
        iv = os.urandom(_IV_BYTES)
        sealed = self._key(self.current_version).encrypt(iv, text.encode(), None)
        body, tag = sealed[:-_TAG_BYTES], sealed[-_TAG_BYTES:]
        return f"v{self.current_version}:{iv.hex()}:{tag.hex()}:{body.hex()}"

    def decrypt(self, stored: str) -> str:
        match = _STORED.fullmatch(stored)
        if match is None:
            raise ColumnDecryptionError("not an encrypted value")
        version, iv, tag, body = match.groups()
        try:
            return (
                self._key(int(version))
                .decrypt(bytes.fromhex(iv), bytes.fromhex(body) + bytes.fromhex(tag), None)
                .decode()
            )
        except (InvalidTag, UnicodeDecodeError) as exc:
            raise ColumnDecryptionError("cannot decrypt: another key, or altered data") from exc

    def is_current(self, stored: str) -> bool:
        return stored.startswith(f"v{self.current_version}:")


#: The column types an encrypted column may declare: the tables API's names and the SQL type each records.
ENCRYPTABLE_TYPES = {
    "string": "text",
    "date": "date",
    "datetime": "timestamptz",
    "integer": "integer",
    "float": "double precision",
    "boolean": "boolean",
    "uuid": "uuid",
    "json": "jsonb",
}


def text_of(value: Any, original_type: str) -> str:
    """The text that is encrypted for a value written to a column of `original_type`; ValueError (with
    Postgres's message for the type) for a value that the type would refuse, as a plain column refuses it."""
    if original_type == "jsonb":
        return orjson.dumps(value).decode()
    if original_type == "text":
        return value if value.__class__ is str else orjson.dumps(value).decode()
    text = value if value.__class__ is str else orjson.dumps(value).decode()
    try:
        canonical: str = _CANONICAL[original_type](value)
    except (ValueError, TypeError, OverflowError):
        raise ValueError(f'invalid input syntax for type {original_type}: "{text}"') from None
    return canonical


def _integer(value: Any) -> str:
    if value.__class__ is bool or not isinstance(value, (int, str)):
        raise TypeError
    number = int(value)
    if not -(2**31) <= number < 2**31:
        raise OverflowError
    return str(number)


def _float(value: Any) -> str:
    if value.__class__ is bool or not isinstance(value, (int, float, str)):
        raise TypeError
    return repr(float(value))


def _boolean(value: Any) -> str:
    if value.__class__ is bool:
        return "true" if value else "false"
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "t", "f"):
        return "true" if value.strip().lower() in ("true", "t") else "false"
    raise TypeError


def _string_of(check: Callable[[str], object]) -> Callable[[Any], str]:
    def canonical(value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError
        check(value.strip())
        return value

    return canonical


_CANONICAL = {
    "integer": _integer,
    "double precision": _float,
    "boolean": _boolean,
    "uuid": _string_of(uuid.UUID),
    "date": _string_of(date.fromisoformat),
    "timestamptz": _string_of(datetime.fromisoformat),
}


def plain_value(text: str, original_type: str) -> Any:
    """The value a decrypted text stands for, as the column's declared type is answered in JSON."""
    if original_type == "jsonb":
        return orjson.loads(text)
    if original_type == "boolean":
        return text == "true"
    if original_type == "integer":
        return int(text)
    if original_type == "double precision":
        return float(text)
    return text
