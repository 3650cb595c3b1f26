"""An unknown email's sign-in verifies against a hash that costs what a real one does, and matches nothing."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import VerifyMismatchError

from kilnbase.auth.passwords import Passwords, unmatchable_hash
from kilnbase.config import AuthSettings


@pytest.mark.parametrize(
    "settings",
    [
        AuthSettings(argon2_time_cost=1, argon2_memory_cost_kib=1024, argon2_parallelism=1),
        AuthSettings(argon2_time_cost=2, argon2_memory_cost_kib=2048, argon2_parallelism=3),
    ],
)
def test_the_dummy_hash_has_the_parameters_of_a_real_one(settings: AuthSettings) -> None:
    hasher = PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_cost_kib,
        parallelism=settings.argon2_parallelism,
        type=Type.ID,
    )
    dummy = unmatchable_hash(hasher)
    assert extract_parameters(dummy) == extract_parameters(hasher.hash("a password"))
    with pytest.raises(VerifyMismatchError):  # (a malformed hash would raise InvalidHashError instead)
        hasher.verify(dummy, "a password")
    assert not hasher.check_needs_rehash(dummy)


def test_each_process_has_its_own_dummy_and_an_unknown_account_never_signs_in() -> None:
    settings = AuthSettings(argon2_time_cost=1, argon2_memory_cost_kib=1024, argon2_parallelism=1)
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.ID)
    assert unmatchable_hash(hasher) != unmatchable_hash(hasher)
    passwords = Passwords(settings)
    assert not passwords.check_sync(None, "kilnbase-dummy-password").ok
    assert not passwords.check_sync("", "").ok
