"""The project's keys: generated on first start, kept in `<data-dir>/keys.json` (mode 0600).

InsForge's environment names override what the file holds (`ACCESS_API_KEY`, `ACCESS_ANON_KEY`,
`JWT_SECRET`, `ENCRYPTION_KEY`, `ROOT_ADMIN_PASSWORD`); an override is used, never written back.
The encryption key for secrets at rest is generated on its own and is never derived from the JWT
secret: InsForge's fallback to `JWT_SECRET` (its issue #905) made every stored secret unreadable the
day the JWT secret was rotated.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from kilnbase.config import Settings

API_KEY_PATTERN = re.compile(r"ik_[0-9a-f]{64}")
ANON_KEY_PATTERN = re.compile(r"anon_[0-9a-f]{64}")


class KeyConfigurationError(ValueError):
    """A key given in the environment (or found on disk) cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class ProjectKeys:
    api_key: str
    anon_key: str
    jwt_secret: str
    encryption_key: bytes
    signing_key_pem: str
    public_key_pem: str
    key_id: str
    root_admin_password: str
    postgres_password: str

    def jwks(self) -> dict[str, Any]:
        """The public half of the signing key as a JWK Set."""
        public_key = serialization.load_pem_public_key(self.public_key_pem.encode())
        assert isinstance(public_key, rsa.RSAPublicKey)
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(public_key, as_dict=True)
        jwk.update({"kid": self.key_id, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}


def _generate() -> dict[str, str]:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return {
        "api_key": "ik_" + secrets.token_hex(32),
        "anon_key": "anon_" + secrets.token_hex(32),
        "jwt_secret": secrets.token_hex(32),
        "encryption_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        "jwt_private_key": private_pem,
        "jwt_public_key": public_pem,
        "jwt_key_id": secrets.token_hex(8),
        "root_admin_password": secrets.token_urlsafe(18),
        "postgres_password": secrets.token_hex(24),
    }


def _write_exclusive(path: Path, stored: dict[str, str]) -> bool:
    """Create `path` atomically with mode 0600; False if another process created it first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keys-")
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            json.dump(stored, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _read(path: Path) -> dict[str, str]:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(path, 0o600)
    with path.open() as f:
        stored: dict[str, str] = json.load(f)
    return stored


def load_stored_keys(path: Path) -> dict[str, str]:
    """Read the key file, creating it with fresh keys on first start. Safe under concurrent first starts."""
    if path.exists():
        stored = _read(path)
    else:
        fresh = _generate()
        stored = fresh if _write_exclusive(path, fresh) else _read(path)
    missing = set(_generate()) - set(stored)
    if missing:
        raise KeyConfigurationError(
            f"{path} lacks {', '.join(sorted(missing))}; restore it from a backup, or move it away to "
            "generate new keys (existing tokens and encrypted secrets will stop working)."
        )
    return stored


def parse_encryption_key(value: str) -> bytes:
    """32 raw bytes from 64 hex digits, base64 of 32 bytes, or (InsForge style) any passphrase via SHA-256."""
    if re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return bytes.fromhex(value)
    with contextlib.suppress(ValueError):
        raw = base64.b64decode(value, validate=True)
        if len(raw) == 32:
            return raw
    if len(value) < 32:
        raise KeyConfigurationError(
            "ENCRYPTION_KEY is too short: use 64 hex characters (openssl rand -hex 32) "
            "or at least 32 characters."
        )
    return hashlib.sha256(value.encode()).digest()


def load_project_keys(settings: Settings) -> ProjectKeys:
    """The keys in force: the data dir's file, with the environment's overrides applied and checked."""
    stored = load_stored_keys(settings.keys_path)
    api_key = settings.access_api_key or stored["api_key"]
    anon_key = settings.access_anon_key or stored["anon_key"]
    jwt_secret = settings.jwt_secret or stored["jwt_secret"]
    if not API_KEY_PATTERN.fullmatch(api_key):
        raise KeyConfigurationError("ACCESS_API_KEY must be 'ik_' followed by 64 hex characters.")
    if not ANON_KEY_PATTERN.fullmatch(anon_key):
        raise KeyConfigurationError("ACCESS_ANON_KEY must be 'anon_' followed by 64 hex characters.")
    if len(jwt_secret) < 32:
        raise KeyConfigurationError("JWT_SECRET must be at least 32 characters (openssl rand -hex 32).")
    if settings.encryption_key is not None:
        if settings.encryption_key == jwt_secret:
            raise KeyConfigurationError(
                "ENCRYPTION_KEY must differ from JWT_SECRET: rotating one must not break the other."
            )
        encryption_key = parse_encryption_key(settings.encryption_key)
    else:
        encryption_key = base64.b64decode(stored["encryption_key"])
    return ProjectKeys(
        api_key=api_key,
        anon_key=anon_key,
        jwt_secret=jwt_secret,
        encryption_key=encryption_key,
        signing_key_pem=stored["jwt_private_key"],
        public_key_pem=stored["jwt_public_key"],
        key_id=stored["jwt_key_id"],
        root_admin_password=settings.root_admin_password or stored["root_admin_password"],
        postgres_password=stored["postgres_password"],
    )
