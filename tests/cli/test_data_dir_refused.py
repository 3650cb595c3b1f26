"""A data dir the disk refuses, as an operator meets it: one it may not read (chmod 000), one on a read-only
file system, one on a full disk. Every command says so in one line, with what to do, and no traceback.

The read-only and full disks are real: small tmpfs mounts (root only; skipped elsewhere). As root, chmod
alone stops nothing, so the command runs without the capabilities that let root past file permissions."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from kilnbase.config import Settings
from kilnbase.keys.project_keys import load_project_keys
from kilnbase.server.embedded_postgres import EmbeddedPostgres, EmbeddedPostgresError
from tests.support.cli import assert_said_in_one_line, run_kilnbase
from tests.support.postgres import reachable_scratch

#: Each command as a user types it, with a data dir appended.
COMMANDS = {
    "serve": ["serve"],
    "keys": ["keys"],
    "db migrate": ["db", "migrate"],
    "mcp": ["mcp"],
    "audit sessions": ["audit", "sessions"],
}


def _without_root_privileges() -> list[str]:
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("as root, chmod needs setpriv (util-linux) to be felt")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]


def kilnbase(
    args: list[str], data_dir: Path, *, prefix: list[str] | None = None, by_environment: bool = False
) -> subprocess.CompletedProcess[str]:
    if by_environment:
        return run_kilnbase(args, env={"KILNBASE_DATA_DIR": str(data_dir)}, prefix=prefix or ())
    return run_kilnbase(args, data_dir=data_dir, prefix=prefix or ())


def assert_refused(result: subprocess.CompletedProcess[str], *said: str) -> None:
    assert_said_in_one_line(result, *said, "--data-dir")
    assert result.stdout == ""


def _with_keys(data_dir: Path) -> Path:
    """A project's data dir as it is before its first start: the key file alone."""
    load_project_keys(Settings(data_dir=data_dir))
    return data_dir


@pytest.fixture
def scratch() -> Iterator[Path]:
    with reachable_scratch("kbrefused-") as parent:
        yield parent
        for path in parent.rglob("*"):  # (chmod 000 stops rmtree as an unprivileged user)
            if path.is_dir() and not path.is_symlink():
                path.chmod(stat.S_IRWXU)


@pytest.fixture
def tmpfs(scratch: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A 64 KiB tmpfs of its own (another size as the fixture's parameter): a disk to fill, or to make
    read-only."""
    size = getattr(request, "param", "64k")
    mount_point = scratch / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def _fill(disk: Path) -> None:
    """Write on `disk` until it is full."""
    with (disk / "filler").open("wb", buffering=0) as filler, pytest.raises(OSError, match="No space left"):
        while True:
            filler.write(b"\0" * 4096)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("by_environment", [False, True], ids=["--data-dir", "KILNBASE_DATA_DIR"])
def test_a_data_dir_it_may_not_read(scratch: Path, command: str, by_environment: bool) -> None:
    data_dir = _with_keys(scratch / "project")
    data_dir.chmod(0)
    result = kilnbase(
        COMMANDS[command], data_dir, prefix=_without_root_privileges(), by_environment=by_environment
    )
    assert_refused(result, str(data_dir), "Permission denied")


def test_a_key_file_it_may_not_read(scratch: Path) -> None:
    data_dir = _with_keys(scratch / "project")
    (data_dir / "keys.json").chmod(0)
    result = kilnbase(COMMANDS["keys"], data_dir, prefix=_without_root_privileges())
    assert_refused(result, str(data_dir / "keys.json"), "Permission denied", "chmod")


@pytest.mark.parametrize("command", ["serve", "db migrate", "mcp"])
def test_a_data_dir_on_a_read_only_file_system(tmpfs: Path, command: str) -> None:
    data_dir = _with_keys(tmpfs / "project")
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    result = kilnbase(COMMANDS[command], data_dir)
    assert_refused(result, str(data_dir), "Read-only file system")
    assert ".write-check" not in result.stderr  # (serve's own probe: the data dir is what is named)


@pytest.mark.parametrize("command", ["serve", "db migrate", "mcp"])
def test_a_data_dir_on_a_full_disk(tmpfs: Path, command: str) -> None:
    # `serve` meets the full disk writing a new project's keys; the others taking the data dir's lock.
    data_dir = tmpfs / "new-project" if command == "serve" else _with_keys(tmpfs / "project")
    _fill(tmpfs)
    result = kilnbase(COMMANDS[command], data_dir)
    assert_refused(result, str(data_dir), "No space left on device", "df -h")
    assert not list(data_dir.glob(".keys-*")), "a half-written key file was left behind"


def test_a_disk_with_room_for_the_keys_but_not_the_database(tmpfs: Path) -> None:
    """The first start writes the key file, then initdb finds the disk full: one line, with what to do,
    instead of Postgres's own lines ("initdb failed ... FATAL: could not write to file")."""
    data_dir = tmpfs / "new-project"
    result = kilnbase(COMMANDS["serve"], data_dir)
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    *progress, said = result.stderr.strip().splitlines()
    assert all(line.startswith("• ") for line in progress), result.stderr
    assert said.startswith("Error: ") and "Traceback" not in result.stderr, result.stderr
    for text in (str(data_dir), "is full (No space left on device)", "df -h", "--data-dir", "50 MB"):
        assert text in said, said
    assert "initdb" not in result.stderr and (data_dir / "keys.json").exists()


@pytest.mark.parametrize("tmpfs", ["64m"], indirect=True)
def test_a_disk_that_fills_once_postgres_has_started(tmpfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Room for initdb and for Postgres to start, but none left to create the project's database: said as a
    full disk, and the Postgres just started is stopped, not left running to hold the disk and the port."""
    cluster = EmbeddedPostgres(tmpfs / "project", secrets.token_hex(8))
    create_database = cluster._ensure_database

    def fill_then_create_database() -> None:
        _fill(tmpfs)
        create_database()

    monkeypatch.setattr(cluster, "_ensure_database", fill_then_create_database)
    try:
        with pytest.raises(EmbeddedPostgresError, match="is full") as refused:
            cluster.start()
        assert "df -h" in str(refused.value) and "--data-dir" in str(refused.value)
        assert cluster.postmaster_pid() is None
    finally:
        left = cluster.postmaster_pid()
        if left is not None:  # (so that a failure here leaves no Postgres behind either)
            psutil.Process(left).kill()


@pytest.mark.parametrize("command", ["serve", "db migrate"])
def test_a_data_dir_that_is_a_file(scratch: Path, command: str) -> None:
    """(`keys`, `mcp` and `audit` say that no project is there, as for any path that holds none.)"""
    data_dir = scratch / "project"
    data_dir.write_text("not a directory\n")
    result = kilnbase(COMMANDS[command], data_dir)
    assert_refused(result, str(data_dir), "it is a file, not a directory")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_data_dir_whose_name_is_too_long(scratch: Path, command: str) -> None:
    data_dir = scratch / ("p" * 300)
    result = kilnbase(COMMANDS[command], data_dir)
    assert_refused(result, str(data_dir), "File name too long", "shorter")
