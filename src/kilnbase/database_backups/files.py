"""What the service needs of backup files, as a Protocol: the files are Kilnbase backups, written and restored
by `server/` (the CLI's own code, `server/live_backups.py`), which this capability may not import;
`services.py` hands it the implementation."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class BackupFileRefused(Exception):
    """The file may not be restored here (damaged, or made with other migrations); nothing was changed."""


class BackupFileFailed(Exception):
    """Making or restoring the file failed; a failed restore was rolled back, so nothing was changed."""


class BackupFiles(Protocol):
    #: The folder the files live in (the data dir's `backups`: never under the storage API).
    @property
    def folder(self) -> Path: ...

    def write(self, path: Path) -> int:
        """Write a backup of the project to `path` (which must not exist); its size in bytes. Blocking."""
        ...

    def restore(self, path: Path) -> None:
        """Restore the backup at `path` into the running project's database, in one transaction. Blocking."""
        ...
