"""A project started with another encryption key than the one it sealed its secrets with, as an operator meets
it: every command that opens the database refuses in one line, saying which key to go back to, and changes
nothing; the right key starts again; a lost key can be given up for the one in force, on purpose only."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import psycopg
import pytest

from kilnbase.config import Settings
from kilnbase.keys.project_keys import load_project_keys, parse_encryption_key
from kilnbase.keys.secret_box import SecretBox
from kilnbase.secrets.project_secrets import sealing_context
from tests.support.cli import assert_said_in_one_line, run_kilnbase
from tests.support.postgres import TestCluster

KEY_A = secrets.token_hex(32)
KEY_B = secrets.token_hex(32)


@pytest.fixture
def project(cluster: TestCluster, tmp_path: Path) -> tuple[Path, str]:
    """A data dir with its keys, and a fresh database (migrated, never started)."""
    data_dir = tmp_path / "project"
    load_project_keys(Settings(data_dir=data_dir))
    return data_dir, cluster.create_database()


def kilnbase(args: list[str], project: tuple[Path, str], key: str | None) -> subprocess.CompletedProcess[str]:
    data_dir, database_url = project
    env = {"DATABASE_URL": database_url} | ({"ENCRYPTION_KEY": key} if key else {})
    return run_kilnbase(args, data_dir=data_dir, env=env)


def assert_started(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (result.stdout, result.stderr)


def seal_a_secret(database_url: str, key: str) -> None:
    """A secret as a Kilnbase from before the check stored it, sealed with `key`."""
    box = SecretBox(parse_encryption_key(key))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "insert into system.secrets (key, value_ciphertext) values ('STRIPE_KEY', %s)",
            (box.encrypt("sk_test_123", context=sealing_context("STRIPE_KEY")),),
        )


@pytest.mark.parametrize("command", [["serve"], ["db", "migrate"], ["keys"], ["mcp"]])
def test_another_key_than_the_first_start_s_is_refused_and_the_key_is_never_shown(
    project: tuple[Path, str], command: list[str]
) -> None:
    assert_started(kilnbase(["db", "migrate"], project, KEY_A))

    refused = kilnbase(command, project, KEY_B)

    assert_said_in_one_line(
        refused,
        "ENCRYPTION_KEY is not the key this project's secrets were sealed with",
        "set ENCRYPTION_KEY back to it",
        "kilnbase db adopt-encryption-key",
    )
    assert KEY_A not in refused.stderr + refused.stdout and KEY_B not in refused.stderr + refused.stdout
    assert_started(kilnbase(["db", "migrate"], project, KEY_A))  # the refusal changed nothing


def test_the_key_in_keys_json_replaced_by_an_environment_key_is_refused(project: tuple[Path, str]) -> None:
    assert_started(kilnbase(["db", "migrate"], project, None))

    refused = kilnbase(["db", "migrate"], project, KEY_B)

    assert_said_in_one_line(refused, "or unset it if the project used the one in", "keys.json")
    assert_started(kilnbase(["db", "migrate"], project, None))


def test_an_environment_key_dropped_for_the_one_in_keys_json_is_refused(project: tuple[Path, str]) -> None:
    assert_started(kilnbase(["db", "migrate"], project, KEY_A))

    refused = kilnbase(["db", "migrate"], project, None)

    assert_said_in_one_line(
        refused, "The encryption key in", "keys.json is not the key", "set ENCRYPTION_KEY to it"
    )


def test_secrets_sealed_before_the_check_existed_decide_its_first_start(project: tuple[Path, str]) -> None:
    seal_a_secret(project[1], KEY_A)

    assert_said_in_one_line(kilnbase(["db", "migrate"], project, KEY_B), "ENCRYPTION_KEY is not the key")
    assert_started(kilnbase(["db", "migrate"], project, KEY_A))
    # From then on the check stands for them.
    assert_said_in_one_line(kilnbase(["db", "migrate"], project, KEY_B), "ENCRYPTION_KEY is not the key")


def test_a_lost_key_is_given_up_only_on_purpose_and_can_be_taken_back(project: tuple[Path, str]) -> None:
    assert_started(kilnbase(["db", "migrate"], project, KEY_A))

    adopted = kilnbase(["db", "adopt-encryption-key"], project, KEY_B)

    assert adopted.returncode == 0, adopted.stderr
    assert "is now the project's" in adopted.stderr and "Set again" in adopted.stderr
    assert_started(kilnbase(["db", "migrate"], project, KEY_B))
    assert_said_in_one_line(kilnbase(["db", "migrate"], project, KEY_A), "ENCRYPTION_KEY is not the key")
    # The old key, found again, is adopted back the same way.
    assert_started(kilnbase(["db", "adopt-encryption-key"], project, KEY_A))
    assert_started(kilnbase(["db", "migrate"], project, KEY_A))


def test_adopting_the_key_already_in_force_changes_nothing(project: tuple[Path, str]) -> None:
    assert_started(kilnbase(["db", "migrate"], project, KEY_A))

    again = kilnbase(["db", "adopt-encryption-key"], project, KEY_A)

    assert again.returncode == 0 and "already the project's: nothing changed" in again.stderr
