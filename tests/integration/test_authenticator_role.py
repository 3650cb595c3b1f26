"""The authenticator role is checked at every start: Kilnbase refuses to serve through a login role that
cannot log in, or that could do more than become the three request roles, and says what to fix."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from kilnbase.db.roles import AUTHENTICATOR, AuthenticatorError, derived_password, prepare_authenticator


def test_the_derived_password_is_set_and_checked(database_url: str) -> None:
    prepare_authenticator(database_url, derived_password(database_url, ""), managed_by_operator=False)


def test_a_wrong_operator_password_is_explained(database_url: str) -> None:
    with pytest.raises(AuthenticatorError, match="KILNBASE_DB_AUTHENTICATOR_PASSWORD"):
        prepare_authenticator(database_url, "not-the-password", managed_by_operator=True)


@pytest.mark.parametrize(
    ("grant", "revoke"),
    [
        (f"alter role {AUTHENTICATOR} inherit", f"alter role {AUTHENTICATOR} noinherit"),
        (f"alter role {AUTHENTICATOR} createrole", f"alter role {AUTHENTICATOR} nocreaterole"),
        (
            f"grant pg_read_server_files to {AUTHENTICATOR}",
            f"revoke pg_read_server_files from {AUTHENTICATOR}",
        ),
    ],
    ids=["inherits", "creates-roles", "reads-server-files"],
)
def test_an_authenticator_with_more_rights_is_refused(database_url: str, grant: str, revoke: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(grant)
        try:
            with pytest.raises(AuthenticatorError, match="must be a NOINHERIT login role"):
                prepare_authenticator(
                    database_url, derived_password(database_url, ""), managed_by_operator=False
                )
        finally:
            conn.execute(revoke)
    prepare_authenticator(database_url, derived_password(database_url, ""), managed_by_operator=False)


def test_starts_at_the_same_moment_all_succeed(database_url: str) -> None:
    """granian's workers (or several servers on one cluster) prepare the role together: none may fail."""
    password = derived_password(database_url, "")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"alter role {AUTHENTICATOR} password 'something-else'")
    with ThreadPoolExecutor(8) as pool:
        starts = [
            pool.submit(prepare_authenticator, database_url, password, managed_by_operator=False)
            for _ in range(8)
        ]
        for start in starts:
            start.result()
    prepare_authenticator(database_url, password, managed_by_operator=True)  # it logs in with it now
