"""Password hashing: argon2id for every new hash, bcrypt accepted for hashes imported from InsForge/Supabase.

A bcrypt (or weaker-parameter argon2) hash that verifies is re-hashed with the current parameters, so imported
users move to argon2id on their first sign-in. Sign-in for an unknown email still runs one argon2 verify
against a dummy hash, so the response time does not tell whether the account exists.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

import anyio.to_thread
import bcrypt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import ARGON2_VERSION

from kilnbase.config import AuthSettings

_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


@dataclass(frozen=True)
class PasswordCheck:
    ok: bool
    new_hash: str | None = None


def unmatchable_hash(hasher: PasswordHasher) -> str:
    """An argon2id hash with `hasher`'s parameters that no password matches (its salt and digest are random
    bytes), to verify against for an unknown email: verifying costs what it costs against a real hash, and
    nothing is hashed to make it (hashing took 110 ms of every start with the default parameters)."""

    def b64(size: int) -> str:  # (PHC's encoding: standard base64, unpadded)
        return base64.b64encode(os.urandom(size)).decode().rstrip("=")

    parameters = f"m={hasher.memory_cost},t={hasher.time_cost},p={hasher.parallelism}"
    return f"$argon2id$v={ARGON2_VERSION}${parameters}${b64(hasher.salt_len)}${b64(hasher.hash_len)}"


class Passwords:
    def __init__(self, settings: AuthSettings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_cost_kib,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )
        self._dummy = unmatchable_hash(self._hasher)

    def hash_sync(self, password: str) -> str:
        return self._hasher.hash(password)

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hasher.hash, password)

    def check_sync(self, stored: str | None, password: str) -> PasswordCheck:
        if not stored:
            self._verify_argon2(self._dummy, password)
            return PasswordCheck(ok=False)
        if stored.startswith(_BCRYPT_PREFIXES):
            try:
                ok = bcrypt.checkpw(password.encode(), stored.encode())
            except ValueError:
                ok = False
            return PasswordCheck(ok=ok, new_hash=self._hasher.hash(password) if ok else None)
        if not self._verify_argon2(stored, password):
            return PasswordCheck(ok=False)
        rehash = self._hasher.check_needs_rehash(stored)
        return PasswordCheck(ok=True, new_hash=self._hasher.hash(password) if rehash else None)

    async def check(self, stored: str | None, password: str) -> PasswordCheck:
        """Constant-time verify in a worker thread (argon2 takes tens of milliseconds)."""
        return await anyio.to_thread.run_sync(self.check_sync, stored, password)

    def _verify_argon2(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
