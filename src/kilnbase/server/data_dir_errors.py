"""What to tell a person when the data dir's disk refuses Kilnbase: no permission, read-only, or full.

These reach the command line as an `OSError` from whichever step touched the disk first (reading the key
file, taking the data dir's lock, writing a new key file), often with no file name (a full disk fails the
`write` or `flush`, not the `open`). One sentence per kind of refusal, with the one thing to do about it,
instead of a traceback that ends in `[Errno 28]`. A path the data dir cannot be at (too long, or a file)
is said the same way.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

#: The refusals that are the disk's or the permissions', not Kilnbase's: each has advice below. Any other
#: `OSError` is a bug or something unforeseen, and keeps its traceback.
_PERMISSION = {errno.EACCES, errno.EPERM}
_FULL = {errno.ENOSPC, errno.EDQUOT}
_EXPLAINED = _PERMISSION | _FULL | {errno.EROFS, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EEXIST}


#: The other way out, the same for every refusal.
_ELSEWHERE = "or choose another data dir with --data-dir (or KILNBASE_DATA_DIR)"


def _named(exc: OSError, data_dir: Path | None) -> str:
    """The path `exc` happened at (the data dir when it names none), with its leading space."""
    where = exc.filename if exc.filename is not None else data_dir
    return f" {os.fsdecode(where)}" if where is not None else " the data dir"


def _reason(exc: OSError) -> str:
    if exc.strerror:
        return exc.strerror
    return os.strerror(exc.errno) if exc.errno else str(exc)


def data_dir_error_message(exc: OSError, data_dir: Path | None) -> str | None:
    """One line for `exc`, naming the path it happened at (the data dir when the error names none) and what
    to do; None when `exc` is not a refusal of the disk's."""
    if exc.errno not in _EXPLAINED or (exc.errno == errno.EEXIST and not _is_a_file(exc)):
        return None
    named, reason, elsewhere = _named(exc, data_dir), _reason(exc), _ELSEWHERE
    if exc.errno in _PERMISSION:
        return (
            f"Kilnbase may not read or write{named} ({reason}). Give this user access to it (chown or "
            f"chmod), run Kilnbase as the user that owns it, {elsewhere}, and try again."
        )
    if exc.errno == errno.EROFS:
        return (
            f"Kilnbase cannot write{named} ({reason}). Remount its disk read-write, {elsewhere} on a "
            "writable disk, and try again."
        )
    if exc.errno in _FULL:
        return (
            f"The disk that holds{named} is full ({reason}). Free some space on it (df -h shows how much "
            f"is left), {elsewhere}, and try again."
        )
    if exc.errno == errno.ENAMETOOLONG:
        return (
            f"Kilnbase cannot use{named} ({reason}): the path is longer than the file system allows. "
            "Choose a shorter data dir with --data-dir (or KILNBASE_DATA_DIR)."
        )
    if exc.errno == errno.EEXIST:
        return f"Kilnbase cannot use{named} ({reason}): it is a file, not a directory. Fix it, {elsewhere}."
    return f"Kilnbase cannot use{named} ({reason}): a part of that path is a file. Fix the path, {elsewhere}."


def _is_a_file(exc: OSError) -> bool:
    """Whether `exc` (a directory that could not be made, as it exists) names something that is not a
    directory: the data dir given is a file. Any other `EEXIST` is not the disk's doing."""
    return exc.filename is not None and os.path.lexists(exc.filename) and not os.path.isdir(exc.filename)


def data_dir_unwritable_message(exc: OSError, data_dir: Path) -> str:
    """One line for any `exc` met while writing in the data dir to see whether it can be written (`serve`'s
    check before it starts anything): a refusal above as it says, and any other error in the same words,
    since that check is there to say so rather than show a traceback."""
    explained = data_dir_error_message(exc, data_dir)
    if explained is not None:
        return explained
    return (
        f"Kilnbase cannot write{_named(exc, data_dir)} ({_reason(exc)}). Fix what stops it, {_ELSEWHERE}, "
        "and try again."
    )
