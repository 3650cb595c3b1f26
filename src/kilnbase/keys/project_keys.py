"""The project's keys: generated on first start, kept in `<data-dir>/keys.json` (mode 0600).

InsForge's environment names override what the file holds (`ACCESS_API_KEY`, `ACCESS_ANON_KEY`,
`JWT_SECRET`, `ENCRYPTION_KEY`, `ROOT_ADMIN_PASSWORD`); an override is used, never written back.
The encryption key for secrets at rest is generated on its own and is never derived from the JWT
secret: InsForge's fallback to `JWT_SECRET` (its issue #905) made every stored secret unreadable the
day the JWT secret was rotated.

Access tokens are signed with a P-256 key (ES256), which signs about twenty times faster than the RSA-2048
key InsForge uses; the RSA key stays, published in the JWKS beside the EC key, so tokens issued before the
switch verify until they expire. A key file written before the EC key existed gets one added on first start,
under a lock, so that every process of the project agrees on it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from kilnbase.config import Settings

API_KEY_PATTERN = re.compile(r"ik_[0-9a-f]{64}")
ANON_KEY_PATTERN = re.compile(r"anon_[0-9a-f]{64}")


KeyKind = Literal["api_key", "anon_key"]
#: (current key per kind, previous keys per kind as (key, expires_at epoch seconds)).
RotatedKeys = tuple[dict[str, str], dict[str, list[tuple[str, float]]]]

log = logging.getLogger("kilnbase.keys")


class KeyRing:
    """The API and anon keys in force: the current key of each kind and, during a grace period after a
    rotation, the previous ones.

    Rotations are stored in the database (`system.project_keys`, encrypted), so every process agrees: a
    process reloads its ring at most `refresh_seconds` after the last load, in the background, when a request
    resolves a key. A key's grace period ends at its `expires_at` in every process without a reload.
    """

    def __init__(self, api_key: str, anon_key: str, refresh_seconds: float = 5.0) -> None:
        self._current: dict[str, str] = {"api_key": api_key, "anon_key": anon_key}
        self._previous: dict[str, list[tuple[str, float]]] = {"api_key": [], "anon_key": []}
        self.refresh_seconds = refresh_seconds
        self._loader: Callable[[], Awaitable[RotatedKeys | None]] | None = None
        self._loaded_at = 0.0
        self._task: asyncio.Task[None] | None = None

    def current(self, kind: KeyKind) -> str:
        return self._current[kind]

    def accepts(self, kind: KeyKind, credential: str) -> bool:
        """Constant-time comparison against every key of `kind` still in force."""
        now = time.time()
        candidate = credential.encode()
        matched = hmac.compare_digest(candidate, self._current[kind].encode())
        for key, expires_at in self._previous[kind]:
            matched |= hmac.compare_digest(candidate, key.encode()) and expires_at > now
        return matched

    def replace(self, loaded: RotatedKeys) -> None:
        current, previous = loaded
        self._current = {**self._current, **current}
        self._previous = {"api_key": previous.get("api_key", []), "anon_key": previous.get("anon_key", [])}

    def attach(self, loader: Callable[[], Awaitable[RotatedKeys | None]] | None) -> None:
        """Set where rotated keys are read from (None detaches), and start a first load."""
        self._loader = loader
        self._loaded_at = 0.0
        self.maybe_refresh()

    def maybe_refresh(self) -> asyncio.Task[None] | None:
        """Start a background reload if the last one is older than `refresh_seconds`; the task, if any."""
        if self._loader is None or self._task is not None:
            return self._task
        if time.monotonic() - self._loaded_at < self.refresh_seconds:
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        self._task = loop.create_task(self._refresh())
        return self._task

    async def refresh_now(self) -> None:
        if self._loader is not None:
            loaded = await self._loader()
            if loaded is not None:
                self.replace(loaded)
            self._loaded_at = time.monotonic()

    async def _refresh(self) -> None:
        try:
            await self.refresh_now()
        except Exception as exc:  # a reload failure keeps the keys we have; it must never break a request
            log.warning("could not reload rotated keys", extra={"fields": {"error": type(exc).__name__}})
            self._loaded_at = time.monotonic()
        finally:
            self._task = None


class KeyConfigurationError(ValueError):
    """A key given in the environment (or found on disk) cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class ProjectKeys:
    api_key: str
    anon_key: str
    jwt_secret: str
    encryption_key: bytes
    #: The RSA-2048 key pair (RS256): what signed access tokens before ES256; still verified.
    signing_key_pem: str
    public_key_pem: str
    key_id: str
    #: The P-256 private key (ES256) that signs access tokens, and its key id.
    ec_signing_key_pem: str
    ec_key_id: str
    root_admin_password: str
    postgres_password: str
    #: The keys in force after rotations (`api_key`/`anon_key` above are the configured, initial ones).
    ring: KeyRing = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ring", KeyRing(self.api_key, self.anon_key))

    def jwks(self) -> dict[str, Any]:
        """The public halves of the signing keys as a JWK Set: the ES256 key that signs, then the RS256 key
        that signed before it."""
        ec_private = serialization.load_pem_private_key(self.ec_signing_key_pem.encode(), password=None)
        assert isinstance(ec_private, ec.EllipticCurvePrivateKey)
        ec_jwk: dict[str, Any] = ECAlgorithm.to_jwk(ec_private.public_key(), as_dict=True)
        ec_jwk.update({"kid": self.ec_key_id, "use": "sig", "alg": "ES256"})
        public_key = serialization.load_pem_public_key(self.public_key_pem.encode())
        assert isinstance(public_key, rsa.RSAPublicKey)
        rsa_jwk: dict[str, Any] = RSAAlgorithm.to_jwk(public_key, as_dict=True)
        rsa_jwk.update({"kid": self.key_id, "use": "sig", "alg": "RS256"})
        return {"keys": [ec_jwk, rsa_jwk]}


#: What the key file holds.
STORED_FIELDS = (
    "api_key",
    "anon_key",
    "jwt_secret",
    "encryption_key",
    "jwt_private_key",
    "jwt_public_key",
    "jwt_key_id",
    "jwt_ec_private_key",
    "jwt_ec_key_id",
    "root_admin_password",
    "postgres_password",
)


#: Added to key files written before ES256.
_EC_FIELDS = ("jwt_ec_private_key", "jwt_ec_key_id")


def _generate_ec() -> dict[str, str]:
    private_key = ec.generate_private_key(ec.SECP256R1())
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {"jwt_ec_private_key": private_pem, "jwt_ec_key_id": secrets.token_hex(8)}


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
        **_generate_ec(),
        "root_admin_password": secrets.token_urlsafe(18),
        "postgres_password": secrets.token_hex(24),
    }


def _write_temporary(path: Path, stored: dict[str, str]) -> str:
    """`stored` in a new file (mode 0600, synced) beside `path`; its name. A write that fails (a full disk)
    leaves no half-written file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keys-")
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            json.dump(stored, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _write_exclusive(path: Path, stored: dict[str, str]) -> bool:
    """Create `path` atomically with mode 0600; False if another process created it first."""
    tmp = _write_temporary(path, stored)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _add_ec_key(path: Path) -> dict[str, str]:
    """The key file with an EC signing key, adding one if it has none (a data dir from before ES256).

    Under an exclusive lock on the file, re-read after the lock is held: processes starting together add
    one key between them. The file is replaced atomically, so a reader sees the old file or the new one."""
    with path.open() as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        stored = _read(path)  # by name: another process may have replaced the file while we waited
        if not set(_EC_FIELDS) <= set(stored):
            stored = {**stored, **_generate_ec()}
            os.replace(_write_temporary(path, stored), path)
        return stored


#: What to do about a key file that cannot be used, the same whatever is wrong with it.
_REPAIR = (
    "restore it from a backup, or move it away to generate new keys (existing tokens and encrypted secrets "
    "will stop working)."
)


def _read(path: Path) -> dict[str, str]:
    """The key file's keys. A file that is not the JSON object of text Kilnbase writes (cut short, edited, a
    directory) is said as such, never quoted: it holds the project's secrets."""
    if path.is_dir():
        raise KeyConfigurationError(f"{path} is a directory, not the project's key file; {_REPAIR}")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(path, 0o600)
    try:
        with path.open() as f:
            stored = json.load(f)
    except ValueError:  # (not UTF-8, or not JSON: cut short, or written over)
        raise KeyConfigurationError(f"{path} is damaged (not valid JSON); {_REPAIR}") from None
    if not isinstance(stored, dict) or not all(isinstance(value, str) for value in stored.values()):
        raise KeyConfigurationError(f"{path} is damaged (not an object of text values); {_REPAIR}")
    return stored


def load_stored_keys(path: Path) -> dict[str, str]:
    """Read the key file, creating it with fresh keys on first start. Safe under concurrent first starts."""
    if path.exists():
        stored = _read(path)
    else:
        fresh = _generate()
        stored = fresh if _write_exclusive(path, fresh) else _read(path)
    missing = set(STORED_FIELDS) - set(stored) - set(_EC_FIELDS)
    if missing:
        raise KeyConfigurationError(f"{path} lacks {', '.join(sorted(missing))}; {_REPAIR}")
    if not set(_EC_FIELDS) <= set(stored):
        stored = _add_ec_key(path)
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
        ec_signing_key_pem=stored["jwt_ec_private_key"],
        ec_key_id=stored["jwt_ec_key_id"],
        root_admin_password=settings.root_admin_password or stored["root_admin_password"],
        postgres_password=stored["postgres_password"],
    )
