"""A Kilnbase backup file: one tar, written and read with the standard library's `tarfile`.

Its members, in this order:

- `manifest.json`: what the file is (`format`, `format_version`), which Kilnbase and PostgreSQL made it, when,
  the migrations the database had, and what else is inside. First, so a file is known for what it is (or is
  not) from its first few hundred bytes.
- `database.dump`: `pg_dump --format=custom` of the project's database.
- `roles.json`: the cluster-level roles the database needs (`pg_dump` dumps one database, and roles are the
  cluster's), with their attributes, memberships and password verifiers.
- `keys.json`: the data dir's key file, byte for byte.
- `storage/...`: the local storage backend's files.
- `SHA256SUMS`: every member's SHA-256, in `sha256sum`'s format. Last, so a file cut short (a copy that
  stopped, a full disk) is told from a whole one, and so `sha256sum -c` checks an unpacked backup by hand.

Reading checks all of it while it unpacks into a folder of the caller's: members with absolute paths, `..`,
links or names this format does not have are refused before anything is written, and `tarfile`'s `data`
filter guards each extraction too.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from kilnbase.db.migrate import Migration

FORMAT = "kilnbase-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DUMP = "database.dump"
ROLES = "roles.json"
KEYS = "keys.json"
STORAGE = "storage"
CHECKSUMS = "SHA256SUMS"
_TOP_LEVEL_FILES = {MANIFEST, DUMP, ROLES, KEYS, CHECKSUMS}
_CHUNK = 1024 * 1024


class BackupRefused(RuntimeError):
    """The file cannot be restored (not a backup, damaged, too new); the message says why and what to do."""


class _Hashing(io.RawIOBase):
    """A reader that hashes what passes through it, and counts it for a progress bar."""

    def __init__(self, source: IO[bytes], on_bytes: Callable[[int], None]) -> None:
        self.source = source
        self.digest = hashlib.sha256()
        self.on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.digest.update(data)
        self.on_bytes(len(data))
        return data


class ArchiveWriter:
    """Adds members to a tar file open for writing, keeping each one's SHA-256 for `SHA256SUMS`, which `close`
    writes before it closes the tar file."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.sums: list[tuple[str, str]] = []

    def add_bytes(self, name: str, data: bytes) -> None:
        info = self._info(name, len(data), time.time())
        self.tar.addfile(info, io.BytesIO(data))
        self.sums.append((hashlib.sha256(data).hexdigest(), name))

    def add_file(self, name: str, path: Path, on_bytes: Callable[[int], None] = lambda _n: None) -> None:
        with path.open("rb") as source:
            stat = os.fstat(source.fileno())
            hashing = _Hashing(source, on_bytes)
            self.tar.addfile(self._info(name, stat.st_size, stat.st_mtime), hashing)
        self.sums.append((hashing.digest.hexdigest(), name))

    def close(self) -> None:
        self.add_bytes(CHECKSUMS, "".join(f"{digest}  {name}\n" for digest, name in self.sums).encode())
        self.tar.close()

    @staticmethod
    def _info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, int(mtime), 0o600
        return info


class _Shape(BaseModel):
    """What a restore reads of a manifest, as `backup.py` writes it (other fields are allowed)."""

    model_config = ConfigDict(extra="allow", strict=True)


class _MigrationEntry(_Shape):
    version: int
    name: str
    checksum: str


class _DatabaseEntry(_Shape):
    owner: str


class _StorageEntry(_Shape):
    backend: Literal["local", "s3"]
    bucket: str | None = None


class _Manifest(_Shape):
    kilnbase_version: str
    postgres_server_version: str
    created_at: str
    database: _DatabaseEntry
    migrations: list[_MigrationEntry]
    storage: _StorageEntry


def manifest_problem(manifest: Any, known: list[Migration]) -> str | None:
    """Why this Kilnbase cannot restore a backup with `manifest`; None when it can. Its shape is checked
    once here, so that what the restore reads of it is there and of its type: a manifest edited or made by
    hand is refused with the field that is wrong, not a traceback."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return "is not a Kilnbase backup (its manifest.json is not one Kilnbase writes)."
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        return (
            f"is a Kilnbase backup of format version {version!r}, which this Kilnbase "
            f"(format version {FORMAT_VERSION}) does not know: restore it with the Kilnbase that made it "
            f"({manifest.get('kilnbase_version', 'unknown')}) or a newer one."
        )
    try:
        _Manifest.model_validate(manifest)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"has a damaged manifest.json ({where}: {first['msg']}): it is not as Kilnbase wrote it."
    if not manifest["postgres_server_version"].split(".")[0].isdecimal():
        return "has a damaged manifest.json (postgres_server_version is not a PostgreSQL version)."
    by_version = {migration.version: migration for migration in known}
    unknown = [m for m in manifest.get("migrations", []) if m.get("version") not in by_version]
    if unknown:
        names = ", ".join(f"{m.get('version', 0):04d}_{m.get('name', '?')}" for m in unknown)
        return (
            f"was made by a newer Kilnbase ({manifest.get('kilnbase_version', 'unknown')}): its database has "
            f"migrations this Kilnbase does not know ({names}). Upgrade Kilnbase, then restore it."
        )
    changed = [m for m in manifest["migrations"] if by_version[m["version"]].checksum != m.get("checksum")]
    if changed:
        names = ", ".join(f"{m['version']:04d}_{m.get('name', '?')}" for m in changed)
        return (
            f"has migrations that differ from this Kilnbase's ({names}): restore it with the Kilnbase that "
            f"made it ({manifest.get('kilnbase_version', 'unknown')})."
        )
    return None


def _member_problem(member: tarfile.TarInfo) -> str | None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        return f"has a member with an unsafe path ({member.name!r})"
    if not (member.isfile() or member.isdir()):
        return f"has a member that is not a plain file ({member.name!r})"
    if not path.parts:  # (`.` or `./`: a backup unpacked and packed again with `tar -C dir .`)
        return f"has a member this format does not have ({member.name!r})"
    if member.isdir() and path.parts[0] != STORAGE:
        return f"has a member this format does not have ({member.name!r})"
    if member.isfile() and member.name not in _TOP_LEVEL_FILES and path.parts[0] != STORAGE:
        return f"has a member this format does not have ({member.name!r})"
    return None


def unpack(archive: Path, into: Path, known: list[Migration]) -> dict[str, Any]:
    """Check `archive` and unpack it into the folder `into`; return its manifest. Raises `BackupRefused` (with
    `into` left for the caller to remove) when it is not a whole Kilnbase backup this version can restore."""
    name = os.fspath(archive)
    try:
        # (Not `with`: an error opening it, not a tar file, is told apart from one reading it, cut short.)
        tar = tarfile.open(archive, mode="r:")  # noqa: SIM115
    except FileNotFoundError:
        raise BackupRefused(f"{name} does not exist: check the backup file's path.") from None
    except (tarfile.TarError, IsADirectoryError):
        raise BackupRefused(f"{name} is not a Kilnbase backup (not a tar file).") from None
    except OSError as exc:  # (a name too long, a path through a file, no permission)
        raise BackupRefused(
            f"{name} cannot be read ({exc.strerror}): check the backup file's path."
        ) from None
    truncated = f"{name} is incomplete or damaged (cut short, or changed since it was written): "
    sums: dict[str, str] = {}
    manifest: dict[str, Any] | None = None
    with tar:
        try:
            for number, member in enumerate(tar):
                problem = _member_problem(member)
                if problem is not None:
                    raise BackupRefused(f"{name} {problem}: refused, nothing was restored.")
                if number == 0 and member.name != MANIFEST:
                    raise BackupRefused(
                        f"{name} is not a Kilnbase backup (it does not start with {MANIFEST})."
                    )
                tar.extract(member, into, filter="data")
                if not member.isfile():
                    continue
                sums[member.name] = _sha256(into / member.name)
                if member.name == MANIFEST:
                    manifest = _read_manifest(into / MANIFEST, name)
                    problem = manifest_problem(manifest, known)
                    if problem is not None:
                        raise BackupRefused(f"{name} {problem}")
        except (tarfile.TarError, EOFError) as exc:
            raise BackupRefused(truncated + f"{exc}.") from None
    if manifest is None:
        raise BackupRefused(f"{name} is not a Kilnbase backup (no {MANIFEST} in it).")
    if CHECKSUMS not in sums:
        raise BackupRefused(truncated + f"its last member, {CHECKSUMS}, is missing.")
    expected = _read_checksums(into / CHECKSUMS)
    del sums[CHECKSUMS]
    if expected != sums:
        differ = sorted(set(expected.items()) ^ set(sums.items()))
        raise BackupRefused(truncated + f"{differ[0][0]} does not match {CHECKSUMS}.")
    for required in (DUMP, ROLES, KEYS):
        if required not in sums:
            raise BackupRefused(f"{name} is not a Kilnbase backup ({required} is missing).")
    return manifest


def _read_manifest(path: Path, name: str) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        raise BackupRefused(f"{name} is not a Kilnbase backup (its {MANIFEST} is not JSON).") from None
    if not isinstance(manifest, dict):
        raise BackupRefused(f"{name} is not a Kilnbase backup (its {MANIFEST} is not one Kilnbase writes).")
    return manifest


def _read_checksums(path: Path) -> dict[str, str]:
    sums = {}
    for line in path.read_text(errors="replace").splitlines():
        digest, _, member = line.partition("  ")
        sums[member] = digest
    return sums


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
