"""The line said for each way a disk refuses the data dir, from the OSError that Python raises for it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from kilnbase.server.data_dir_errors import data_dir_error_message, data_dir_unwritable_message

DATA_DIR = Path("/srv/project")


def raised(number: int, filename: str | None = None) -> OSError:
    """The exception the interpreter builds for `number` (PermissionError for EACCES, and so on)."""
    return (
        OSError(number, os.strerror(number))
        if filename is None
        else OSError(number, os.strerror(number), filename)
    )


@pytest.mark.parametrize(
    ("number", "advice"),
    [
        (errno.EACCES, "chown or chmod"),
        (errno.EPERM, "chown or chmod"),
        (errno.EROFS, "Remount its disk read-write"),
        (errno.ENOSPC, "df -h"),
        (errno.EDQUOT, "df -h"),
        (errno.ENOTDIR, "a part of that path is a file"),
    ],
)
def test_each_refusal_names_the_path_the_reason_and_what_to_do(number: int, advice: str) -> None:
    message = data_dir_error_message(raised(number, "/srv/project/keys.json"), DATA_DIR)
    assert message is not None
    assert "/srv/project/keys.json" in message and os.strerror(number) in message
    assert advice in message and "--data-dir" in message


def test_a_write_that_names_no_file_names_the_data_dir() -> None:
    # A full disk fails the write or the flush, whose OSError has no file name.
    message = data_dir_error_message(raised(errno.ENOSPC), DATA_DIR)
    assert message is not None and "/srv/project is full" in message
    assert "the data dir is full" in (data_dir_error_message(raised(errno.ENOSPC), None) or "")


def test_other_errors_keep_their_traceback() -> None:
    assert isinstance(raised(errno.ECONNREFUSED), ConnectionRefusedError)
    assert data_dir_error_message(raised(errno.ECONNREFUSED), DATA_DIR) is None
    assert data_dir_error_message(raised(errno.EIO, "/srv/project/keys.json"), DATA_DIR) is None


def test_serves_write_check_says_any_error_in_the_same_words() -> None:
    """`serve` writes in the data dir before it starts anything, to say what stops it in one line: a refusal
    as every command says it, and any other error with the same way out."""
    refused = raised(errno.EROFS, "/srv/project")
    assert data_dir_unwritable_message(refused, DATA_DIR) == data_dir_error_message(refused, DATA_DIR)
    other = data_dir_unwritable_message(raised(errno.EIO), DATA_DIR)
    assert other.startswith("Kilnbase cannot write /srv/project (Input/output error).")
    assert "--data-dir (or KILNBASE_DATA_DIR)" in other
