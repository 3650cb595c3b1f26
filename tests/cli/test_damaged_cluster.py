"""A project's PostgreSQL folder that was damaged after it ran, as an operator meets it: `postgresql.conf`
rewritten without Kilnbase's include line, `PG_VERSION` lost, or a `keys.json` that is not this database's.
Each is said in one line with what to put back, and the folder, which holds the project's data, is left as it
was: never set aside as half-made, never made again."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import run_kilnbase
from tests.support.postgres import reachable_scratch

INCLUDE_LINE = "include_if_exists = 'kilnbase.conf'"


def kilnbase(*args: str) -> subprocess.CompletedProcess[str]:
    return run_kilnbase(args, columns=80)


@pytest.fixture
def project() -> Iterator[Path]:
    """A data dir whose database was made and has run (`db migrate` starts and stops it)."""
    with reachable_scratch("kbdamaged-") as parent:
        data_dir = parent / "project"
        made = kilnbase("db", "migrate", "--data-dir", str(data_dir))
        assert made.returncode == 0, made.stderr
        yield data_dir


def assert_refused(data_dir: Path, *said: str) -> None:
    result = kilnbase("db", "migrate", "--data-dir", str(data_dir))
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: "), result.stderr
    for text in said:
        assert text in last, last
    assert not list(data_dir.glob("pgdata.incomplete-*")), "the project's database was set aside"


def assert_same_database_again(data_dir: Path) -> None:
    """Once put right, the database is the one made before: a new one would need its migrations again."""
    result = kilnbase("db", "migrate", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert "The database is up to date." in result.stderr, result.stderr


def test_a_postgresql_conf_rewritten_without_the_include_line(project: Path) -> None:
    conf = project / "pgdata" / "postgresql.conf"
    original = conf.read_text()
    conf.write_text(original.replace(INCLUDE_LINE, "# (an operator's edit dropped the include)"))
    assert_refused(project, str(conf), INCLUDE_LINE, "Add that line back", "Nothing in")
    conf.write_text(original)
    assert_same_database_again(project)


def test_a_cluster_that_lost_its_pg_version_file(project: Path) -> None:
    version_file = project / "pgdata" / "PG_VERSION"
    version = version_file.read_bytes()
    version_file.unlink()
    assert_refused(project, str(project / "pgdata"), "PG_VERSION file is missing", "Put that file back")
    assert (project / "pgdata" / "global" / "pg_control").exists(), "the project's database was deleted"
    version_file.write_bytes(version)
    assert_same_database_again(project)


def test_a_key_file_that_is_not_this_databases(project: Path) -> None:
    keys_file = project / "keys.json"
    original = keys_file.read_text()
    keys_file.write_text(json.dumps(json.loads(original) | {"postgres_password": "0" * 48}))
    assert_refused(project, f"refused the password in {keys_file}", "Put back the keys.json")
    keys_file.write_text(original)
    assert_same_database_again(project)


def test_a_cluster_given_to_another_owner(project: Path) -> None:
    """(As root, Postgres runs as `nobody`.) pg_ctl alone says why, and the error said Postgres's log from
    the run before instead, which reads as the cause: only this attempt's lines are said now."""
    if os.geteuid() != 0:
        pytest.skip("Postgres runs as this user: a folder of root's is one it cannot be kept from")
    pgdata = project / "pgdata"
    owner = pgdata.stat()
    subprocess.run(["chown", "-R", "root:root", str(pgdata)], check=True)
    result = kilnbase("db", "migrate", "--data-dir", str(project))
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    said = result.stderr.split("Error: ", 1)[1]
    assert "Permission denied" in said and f"{pgdata} must be nobody's alone (chown -R" in said, said
    assert "database system is shut down" not in said, said  # (the fixture's run, not this one)
    subprocess.run(["chown", "-R", f"{owner.st_uid}:{owner.st_gid}", str(pgdata)], check=True)
    assert_same_database_again(project)
