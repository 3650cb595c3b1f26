"""The embedded cluster's lifecycle, driven directly."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from kilnbase.server.embedded_postgres import EmbeddedPostgres, EmbeddedPostgresError, wheel_bin_dir
from tests.support.postgres import reachable_scratch


@pytest.fixture
def parent() -> Iterator[Path]:
    with reachable_scratch("kbpg-") as path:
        yield path


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs Postgres as another user")
def test_binaries_the_postgres_user_cannot_reach_are_copied_into_the_data_dir(parent: Path) -> None:
    hidden = parent / "hidden"
    hidden.mkdir(mode=0o700)  # like a venv under /root
    site_packages = wheel_bin_dir().parents[2]
    for name in ("embedded_postgres", "embedded_postgres.libs"):
        shutil.copytree(site_packages / name, hidden / name, symlinks=True)
    hidden_bin = hidden / "embedded_postgres" / "pginstall" / "bin"
    cluster = EmbeddedPostgres(parent / "data", secrets.token_hex(8), bin_dir=hidden_bin)
    conninfo = cluster.start()
    try:
        assert (
            parent / "data" / "pgbinaries" / "embedded_postgres" / "pginstall" / "bin" / "postgres"
        ).exists()
        with psycopg.connect(conninfo) as conn:
            assert conn.execute("select current_setting('server_version_num')::int >= 180000").fetchone() == (
                True,
            )
    finally:
        cluster.stop()
    conninfo = cluster.start()  # the copy is reused, not made again
    cluster.stop()


def test_the_socket_is_used_when_its_path_fits_and_tcp_otherwise(parent: Path) -> None:
    short = EmbeddedPostgres(parent / "d", secrets.token_hex(8))
    deep = parent / ("x" * 60) / ("y" * 60)
    deep.mkdir(parents=True)
    for folder in (deep.parent, deep):
        folder.chmod(0o755)
    long = EmbeddedPostgres(deep / "data", secrets.token_hex(8))
    for cluster, expected_host in ((short, str(parent / "d" / "run")), (long, "127.0.0.1")):
        conninfo = cluster.start()
        try:
            with psycopg.connect(conninfo) as conn:
                assert conn.info.host == expected_host
        finally:
            cluster.stop()


def test_a_wrong_password_is_refused(parent: Path) -> None:
    cluster = EmbeddedPostgres(parent / "data", secrets.token_hex(8))
    conninfo = cluster.start()
    try:
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(conninfo.replace(cluster.password, "wrong"), connect_timeout=5)
    finally:
        cluster.stop()


def test_a_held_data_dir_is_refused(parent: Path) -> None:
    first = EmbeddedPostgres(parent / "data", secrets.token_hex(8))
    first.start()
    try:
        with pytest.raises(EmbeddedPostgresError, match="Another Kilnbase server"):
            EmbeddedPostgres(parent / "data", first.password).start()
    finally:
        first.stop()


def test_a_cluster_an_earlier_version_left_half_made_is_set_aside_and_made_again(parent: Path) -> None:
    """Before initdb ran beside `pgdata/`, a first start stopped during it left `pgdata/PG_VERSION` with no
    include of `kilnbase.conf`: every later start took it as ready and failed on port 5432. Such a folder is
    moved aside (never deleted) and the cluster is made again."""
    half_made = parent / "data" / "pgdata"
    half_made.mkdir(parents=True)
    (half_made / "PG_VERSION").write_text("18\n")
    (half_made / "postgresql.conf").write_text("# initdb was stopped here\n")
    said: list[str] = []
    cluster = EmbeddedPostgres(parent / "data", secrets.token_hex(8), progress=said.append)
    conninfo = cluster.start()
    try:
        with psycopg.connect(conninfo) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        cluster.stop()
    [aside] = (parent / "data").glob("pgdata.incomplete-*")
    assert (aside / "postgresql.conf").read_text() == "# initdb was stopped here\n"
    assert any("half-made" in line and str(aside) in line for line in said)
