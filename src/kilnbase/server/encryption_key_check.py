"""Refuse to start with an encryption key other than the one the project sealed its secrets with.

Everything Kilnbase keeps secret at rest (secrets, AI provider keys, OAuth and webhook secrets, rotated
project keys, encrypted columns) is sealed with the project's encryption key: `ENCRYPTION_KEY`, or else the
one in the data directory's `keys.json`. A server given another key used to start cleanly and then fail each
read of them with a 500, one at a time, while sealing new values under a key the old ones do not share.
Instead, the first start seals a known value with its key (`system.encryption_key_check`, migration 0360)
and every start opens it: a key that cannot is refused before anything listens, with the way back.

A database from before the check has no such value; its first start probes what was sealed already (a
secret, a rotated key) and makes the check only if the key opens it. An operator whose old key is lost
adopts the one in force (`kilnbase db adopt-encryption-key`): what the old key sealed stays unreadable.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from kilnbase.config import Settings
from kilnbase.keys.project_keys import KeyConfigurationError, ProjectKeys
from kilnbase.keys.secret_box import DecryptionError, SecretBox
from kilnbase.secrets import project_key_rotation, project_secrets

_CONTEXT = "system.encryption_key_check"
_KNOWN_VALUE = "kilnbase encryption key check"
#: What was sealed before the check existed, one value of each kind, with the context each was sealed under.
_SEALED_BEFORE: tuple[tuple[str, Callable[[str], str]], ...] = (
    (
        "select key, value_ciphertext from system.secrets order by created_at limit 1",
        project_secrets.sealing_context,
    ),
    (
        "select kind, key_ciphertext from system.project_keys order by created_at limit 1",
        project_key_rotation.sealing_context,
    ),
)


def check_encryption_key(owner_conninfo: str, keys: ProjectKeys, settings: Settings) -> None:
    """Raise `KeyConfigurationError` unless the key in force opens what the project sealed; make the check
    on the first start that has none."""
    box = SecretBox(keys.encryption_key)
    with psycopg.connect(owner_conninfo, autocommit=True, connect_timeout=10) as conn:
        try:
            row = conn.execute("select sealed from system.encryption_key_check").fetchone()
        except psycopg.errors.UndefinedTable:
            return  # not migrated yet (a command beside an older server): the start that migrates checks
        if row is None:
            for query, context in _SEALED_BEFORE:
                sealed_before = conn.execute(query).fetchone()
                if sealed_before is not None and not _opens(box, sealed_before[1], context(sealed_before[0])):
                    raise _wrong_key(settings)
            conn.execute(
                "insert into system.encryption_key_check (sealed) values (%s) on conflict do nothing",
                (box.encrypt(_KNOWN_VALUE, context=_CONTEXT),),
            )
            # (Another process may have made it first, with its own key.)
            row = conn.execute("select sealed from system.encryption_key_check").fetchone()
    if row is None or not _opens(box, row[0], _CONTEXT):
        raise _wrong_key(settings)


def adopt_encryption_key(owner_conninfo: str, keys: ProjectKeys) -> None:
    """Make the key in force the project's, whatever sealed the check before (its old key is lost). Nothing
    sealed is rewritten or removed: adopting the old key again, if it is found, makes all of it readable."""
    sealed = SecretBox(keys.encryption_key).encrypt(_KNOWN_VALUE, context=_CONTEXT)
    with psycopg.connect(owner_conninfo, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            "insert into system.encryption_key_check (sealed) values (%s) "
            "on conflict (only_row) do update set sealed = excluded.sealed, created_at = now()",
            (sealed,),
        )


def _opens(box: SecretBox, sealed: str, context: str) -> bool:
    try:
        box.decrypt(sealed, context=context)
    except DecryptionError:
        return False
    return True


def _wrong_key(settings: Settings) -> KeyConfigurationError:
    if settings.encryption_key is not None:
        which = "ENCRYPTION_KEY is not the key"
        back = "set ENCRYPTION_KEY back to it, or unset it if the project used the one in " + str(
            settings.keys_path
        )
    else:
        which = f"The encryption key in {settings.keys_path} is not the key"
        back = "set ENCRYPTION_KEY to it"
    return KeyConfigurationError(
        f"{which} this project's secrets were sealed with: none of them (secrets, AI provider keys, OAuth "
        f"and webhook secrets, encrypted columns) could be read. Start with the key the project was started "
        f"with: {back}. If that key is lost, `kilnbase db adopt-encryption-key` makes the one in force the "
        f"project's; what the old key sealed stays unreadable until it is set again."
    )
