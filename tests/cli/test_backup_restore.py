"""`kilnbase db backup` and `kilnbase db restore` as a user runs them: a project with a table, an RLS policy,
a user, a stored object, a secret and a function is backed up while its server runs, restored into a new
data dir and served again; and every file `restore` must refuse is refused, changing nothing.

One backup (module fixture) serves every test; each restores into a data dir of its own. The same round trip
runs with `DATABASE_URL` on the machine's PostgreSQL 15 (127.0.0.1:5432), in databases named kb_restore_*
that the tests create and drop: the bundled pg_restore (18) cannot restore into 15 directly."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from kilnbase.server.restore import RestoreError, _restore_through_psql
from tests.support.servers import ServerProcess

PASSWORD = "correct horse 1"
OBJECT = secrets.token_bytes(3000) + b"\x00 the end"


def kilnbase(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kilnbase", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(data_dir / "pgdata") in (proc.info["cmdline"] or []):
            found.append(proc)
    return found


@dataclass(frozen=True)
class Project:
    parent: Path
    data_dir: Path
    backup: Path
    backup_output: str
    api_key: str
    email: str
    user_id: str
    access_token: str


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _populate(url: str, api_key: str, anon_key: str) -> tuple[str, str, str]:
    """A user, a table of notes only their owner reads, an object, a secret and a function."""
    admin = _bearer(api_key)
    email = f"ada-{secrets.token_hex(4)}@example.com"
    session = httpx.post(
        f"{url}/api/auth/users?client_type=mobile",
        headers=_bearer(anon_key),
        json={"email": email, "password": PASSWORD, "name": "Ada"},
    ).json()
    user_id, access = session["user"]["id"], session["accessToken"]
    sql = [
        "create table public.notes (id int primary key, owner uuid not null, body text not null)",
        "create policy own_notes on public.notes for select to authenticated using (owner = auth.uid())",
        "grant select on public.notes to authenticated",
        "insert into public.notes values (1, $1::uuid, 'mine'), (2, gen_random_uuid(), 'not mine')",
    ]
    for query in sql:
        params = [user_id] if "$1" in query else []
        answer = httpx.post(
            f"{url}/api/database/advance/rawsql", headers=admin, json={"query": query, "params": params}
        )
        assert answer.status_code == 200, answer.text
    assert httpx.post(
        f"{url}/api/storage/buckets", headers=admin, json={"bucketName": "files", "isPublic": False}
    ).is_success
    uploaded = httpx.put(
        f"{url}/api/storage/buckets/files/objects/deep/blob.bin",
        headers=admin,
        files={"file": ("blob.bin", OBJECT, "application/octet-stream")},
    )
    assert uploaded.is_success, uploaded.text
    assert httpx.post(
        f"{url}/api/secrets", headers=admin, json={"key": "GREETING", "value": "bonjour"}
    ).is_success
    _populate_encrypted(url, admin)
    created = httpx.post(
        f"{url}/api/functions",
        headers=admin,
        json={"name": "greet", "code": "export default () => new Response('hi');"},
        timeout=60,  # (a deploy runs deno check: seconds on a loaded machine)
    )
    assert created.is_success, created.text
    return email, user_id, access


def _populate_encrypted(url: str, admin: dict[str, str]) -> None:
    """A table with an encrypted column (its registry names the column by the table's oid) and a row."""
    column = {"columnName": "ssn", "type": "string", "isNullable": True, "isUnique": False, "encrypted": True}
    created = httpx.post(
        f"{url}/api/database/tables", headers=admin, json={"tableName": "patients", "columns": [column]}
    )
    assert created.status_code == 201, created.text
    inserted = httpx.post(f"{url}/api/database/records/patients", headers=admin, json={"ssn": "123-45-6789"})
    assert inserted.status_code == 201, inserted.text


def _reads_and_writes_encrypted_values(url: str, admin: dict[str, str]) -> None:
    """The restored table's encrypted column reads as plaintext and takes a new value (as ciphertext)."""
    records = f"{url}/api/database/records/patients"
    assert httpx.get(f"{records}?select=ssn", headers=admin).json() == [{"ssn": "123-45-6789"}]
    written = httpx.post(records, headers=admin, json={"ssn": "987-65-4321"})
    assert written.status_code == 201, written.text
    read = httpx.get(f"{records}?select=ssn", headers=admin).json()
    assert sorted(row["ssn"] for row in read) == ["123-45-6789", "987-65-4321"]
    stored = httpx.post(
        f"{url}/api/database/advance/rawsql",
        headers=admin,
        json={"query": "select count(*) as n from patients where ssn like 'v1:%'"},
    )
    assert stored.json()["rows"] == [{"n": 2}]


@pytest.fixture(scope="module")
def project() -> Iterator[Project]:
    # Not pytest's tmp_path: that is mode 0700, which the unprivileged Postgres user (as root) cannot enter.
    parent = Path(tempfile.mkdtemp(prefix="kbbackup-", dir="/tmp"))
    parent.chmod(0o755)
    data_dir = parent / "original"
    server = ServerProcess(data_dir)
    try:
        server.start()
        keys = json.loads((data_dir / "keys.json").read_text())
        email, user_id, access = _populate(server.url, keys["api_key"], keys["anon_key"])
        backup = parent / "project.tar"
        made = kilnbase("db", "backup", "--data-dir", str(data_dir), "--output", str(backup))
        assert made.returncode == 0, made.stderr
        assert server.stop() in (0, -signal.SIGTERM)
        yield Project(parent, data_dir, backup, made.stderr, keys["api_key"], email, user_id, access)
    finally:
        server.kill()
        for data in parent.iterdir():
            for proc in postgres_processes(data):
                proc.kill()
        shutil.rmtree(parent, ignore_errors=True)


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def test_the_backup_is_one_private_file_that_says_what_it_holds(project: Project) -> None:
    assert project.backup.stat().st_mode & 0o777 == 0o600
    assert "mode 0600" in project.backup_output
    assert f"Backup written: {project.backup}" in project.backup_output
    members = _members(project.backup)
    names = list(members)
    assert names[0] == "manifest.json" and names[-1] == "SHA256SUMS"
    assert {"database.dump", "roles.json", "keys.json"} <= set(names)
    assert [name for name in names if name.startswith("storage/blobs/")], names
    assert members["keys.json"] == (project.data_dir / "keys.json").read_bytes()
    manifest = json.loads(members["manifest.json"])
    assert manifest["format"] == "kilnbase-backup" and manifest["format_version"] == 1
    assert manifest["postgres_server_version"].startswith("18")
    assert manifest["migrations"] and all(
        {"version", "name", "checksum"} <= set(m) for m in manifest["migrations"]
    )
    assert manifest["storage"]["backend"] == "local" and manifest["storage"]["files"] >= 1
    assert {"anon", "authenticated", "project_admin", "kilnbase_authenticator"} <= set(manifest["roles"])


def _serves_what_the_backup_held(url: str, project: Project) -> None:
    """The password signs in, the policy decides as before (the user reads their own note only; the API key
    reads both), and the object and the secret are there."""
    admin = _bearer(project.api_key)
    signed_in = httpx.post(
        f"{url}/api/auth/sessions?client_type=mobile", json={"email": project.email, "password": PASSWORD}
    )
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["user"]["id"] == project.user_id
    mine = httpx.get(f"{url}/api/database/records/notes", headers=_bearer(signed_in.json()["accessToken"]))
    assert mine.json() == [{"id": 1, "owner": project.user_id, "body": "mine"}]
    every = httpx.get(f"{url}/api/database/records/notes?order=id", headers=admin)
    assert [row["body"] for row in every.json()] == ["mine", "not mine"]
    object_url = f"{url}/api/storage/buckets/files/objects/deep/blob.bin"
    assert httpx.get(object_url, headers=admin, follow_redirects=True).content == OBJECT
    assert httpx.get(f"{url}/api/secrets/GREETING", headers=admin).json()["value"] == "bonjour"
    _reads_and_writes_encrypted_values(url, admin)


def test_a_restored_project_serves_what_the_backup_held(project: Project) -> None:
    target = project.parent / f"restored-{secrets.token_hex(3)}"
    restored = kilnbase("db", "restore", str(project.backup), "--data-dir", str(target))
    assert restored.returncode == 0, restored.stderr
    assert f"serve --data-dir {target}" in restored.stderr
    assert (target / "keys.json").read_bytes() == (project.data_dir / "keys.json").read_bytes()
    assert (target / "keys.json").stat().st_mode & 0o777 == 0o600
    assert postgres_processes(target) == []  # (stopped after the restore)

    server = ServerProcess(target)
    server.start()
    try:
        url, admin = server.url, _bearer(project.api_key)
        assert "Applied" not in server.output()  # (the backup's migrations are this version's: none to apply)
        # The session issued before the backup is still valid, and the password signs in.
        current = httpx.get(f"{url}/api/auth/sessions/current", headers=_bearer(project.access_token))
        assert current.status_code == 200 and current.json()["user"]["id"] == project.user_id
        _serves_what_the_backup_held(url, project)
        functions = httpx.get(f"{url}/api/functions", headers=admin).json()
        assert "greet" in json.dumps(functions)
        owner = httpx.post(
            f"{url}/api/database/advance/rawsql",
            headers=admin,
            json={"query": "select tableowner::text, rowsecurity from pg_tables where tablename = 'notes'"},
        )
        assert owner.json()["rows"] == [{"tableowner": "project_admin", "rowsecurity": True}]
    finally:
        server.stop()


def test_a_backup_of_a_stopped_project_starts_and_stops_its_database(project: Project) -> None:
    output = project.parent / f"stopped-{secrets.token_hex(3)}.tar"
    made = kilnbase("db", "backup", "--data-dir", str(project.data_dir), "--output", str(output))
    assert made.returncode == 0, made.stderr
    assert "Stopping PostgreSQL" in made.stderr
    assert postgres_processes(project.data_dir) == []
    first = json.loads(_members(project.backup)["manifest.json"])
    assert json.loads(_members(output)["manifest.json"])["migrations"] == first["migrations"]
    output.unlink()


def test_the_default_file_name_is_in_the_current_directory(project: Project, tmp_path: Path) -> None:
    made = kilnbase("db", "backup", "--data-dir", str(project.data_dir), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    [written] = list(tmp_path.iterdir())
    assert written.name.startswith("kilnbase-backup-") and written.name.endswith("Z.tar")


#: An --output that cannot be written, made in the test's folder, and how the error says so.
_UNWRITABLE_OUTPUTS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "below a file": (lambda parent: parent / "a-file" / "backup.tar", "a part of that path is a file"),
    "a name too long": (lambda parent: parent / ("b" * 300 + ".tar"), "File name too long"),
    "in /proc": (lambda _parent: Path("/proc/backup.tar"), "No such file or directory"),
}


@pytest.mark.parametrize("where", _UNWRITABLE_OUTPUTS)
def test_an_output_that_cannot_be_written_is_said_of_output(
    project: Project, tmp_path: Path, where: str
) -> None:
    """Said of --output, in one line, with what to change: not as a traceback, nor as the data dir's disk."""
    (tmp_path / "a-file").write_text("")
    make, reason = _UNWRITABLE_OUTPUTS[where]
    output = make(tmp_path)
    made = kilnbase("db", "backup", "--data-dir", str(project.data_dir), "--output", str(output))
    assert made.returncode == 1, made.stderr
    assert "Traceback" not in made.stderr, made.stderr
    said = made.stderr.strip().splitlines()[-1]
    assert said.startswith(f"Error: Cannot write {output}"), said
    assert reason in said and "Choose another --output" in said and "--data-dir" not in said, said
    assert postgres_processes(project.data_dir) == []


def _packed(members: dict[str, bytes], target: Path) -> Path:
    with tarfile.open(target, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return target


def _rewritten(source: Path, target: Path, change: Any) -> Path:
    """`source` with its manifest changed by `change` (the other members as they were)."""
    members = _members(source)
    manifest = json.loads(members["manifest.json"])
    change(manifest)
    members["manifest.json"] = json.dumps(manifest).encode()
    return _packed(members, target)


def _garbage(project: Project, path: Path) -> Path:
    path.write_bytes(secrets.token_bytes(5000))
    return path


def _truncated(project: Project, path: Path) -> Path:
    data = project.backup.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _newer(project: Project, path: Path) -> Path:
    def add(manifest: dict[str, Any]) -> None:
        manifest["migrations"].append({"version": 9999, "name": "from_the_future", "checksum": "0" * 64})

    return _rewritten(project.backup, path, add)


def _unknown_format(project: Project, path: Path) -> Path:
    return _rewritten(project.backup, path, lambda manifest: manifest.update(format_version=99))


def _edited(project: Project, path: Path) -> Path:
    """A manifest edited by hand into a shape Kilnbase never writes."""
    return _rewritten(project.backup, path, lambda manifest: manifest["database"].update(owner=5))


def _damaged(project: Project, path: Path) -> Path:
    data = bytearray(project.backup.read_bytes())
    middle = data.index(b"PGDMP") + 2000  # inside the dump's bytes: the tar's headers are intact
    data[middle] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _repacked(project: Project, path: Path) -> Path:
    """Unpacked (to check with `sha256sum -c`, as the format invites) and packed again with `tar -C dir .`:
    a first member `./`, whose path has no parts."""
    unpacked = path.with_suffix(".d")
    with tarfile.open(project.backup) as tar:
        tar.extractall(unpacked, filter="data")
    with tarfile.open(path, "w") as tar:
        tar.add(unpacked, arcname=".")
    shutil.rmtree(unpacked)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_garbage, "is not a Kilnbase backup (not a tar file)"),
        (_truncated, "is incomplete or damaged"),
        (_damaged, "database.dump does not match SHA256SUMS"),
        (_newer, "was made by a newer Kilnbase"),
        (_unknown_format, "format version 99, which this Kilnbase (format version 1) does not know"),
        (_repacked, "has a member this format does not have ('.')"),
        (_edited, "has a damaged manifest.json (database.owner: Input should be a valid string)"),
    ],
)
def test_a_file_that_cannot_be_restored_is_refused_changing_nothing(
    project: Project, make: Any, message: str
) -> None:
    bad = make(project, project.parent / f"bad-{secrets.token_hex(3)}.tar")
    target = project.parent / f"never-{secrets.token_hex(3)}"
    refused = kilnbase("db", "restore", str(bad), "--data-dir", str(target))
    assert refused.returncode == 1
    assert message in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert not target.exists()
    bad.unlink()


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("missing.tar", "does not exist"),
        ("a-file/backup.tar", "cannot be read (Not a directory)"),
        ("b" * 300 + ".tar", "cannot be read (File name too long)"),
    ],
)
def test_a_backup_path_that_cannot_be_read_is_said_with_what_to_check(
    tmp_path: Path, where: str, reason: str
) -> None:
    (tmp_path / "a-file").write_text("")
    target = tmp_path / "restored"
    refused = kilnbase("db", "restore", str(tmp_path / where), "--data-dir", str(target))
    assert refused.returncode == 1, refused.stderr
    assert "Traceback" not in refused.stderr, refused.stderr
    said = refused.stderr.strip().splitlines()[-1]
    assert said.startswith(f"Error: {tmp_path / where} {reason}"), said
    assert "check the backup file's path" in said and "Nothing was left behind" in said, said
    assert not target.exists()


def test_a_data_dir_that_holds_anything_is_refused_and_left_alone(project: Project) -> None:
    target = project.parent / f"busy-{secrets.token_hex(3)}"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    refused = kilnbase("db", "restore", str(project.backup), "--data-dir", str(target))
    assert refused.returncode == 1
    assert "is not empty: a restore never overwrites. Pick an empty or new --data-dir." in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    # The project's own data dir, above all:
    before = sorted(p.name for p in project.data_dir.iterdir())
    again = kilnbase("db", "restore", str(project.backup), "--data-dir", str(project.data_dir))
    assert again.returncode == 1 and "is not empty" in again.stderr
    assert sorted(p.name for p in project.data_dir.iterdir()) == before


# --- A restore that fails on the way leaves nothing behind ------------------------------------------------


def _repacked_with(source: Path, target: Path, changes: dict[str, Callable[[bytes], bytes]]) -> Path:
    """`source` with members changed (by name, a function of their bytes) and its SHA256SUMS written again
    to match: a file whose every check passes."""
    members = _members(source)
    for name, change in changes.items():
        members[name] = change(members[name])
    del members["SHA256SUMS"]
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in members.items())
    members["SHA256SUMS"] = sums.encode()
    return _packed(members, target)


def _cut(dump: bytes) -> bytes:
    """The dump without its last bytes: pg_restore creates the schema and most rows, then fails on the last
    table's (the table data comes last), after the roles were created."""
    return dump[:-16]


def _blocked_storage(parent: Path) -> tuple[Path, dict[str, str]]:
    """A storage dir (STORAGE_DIR) that cannot be made: below a file, where a folder should be."""
    blocker = parent / f"blocker-{secrets.token_hex(3)}"
    blocker.write_text("a file, not a folder")
    return blocker, {"STORAGE_DIR": str(blocker / "storage")}


def _leftovers(parent: Path, before: set[str]) -> set[str]:
    return {path.name for path in parent.iterdir()} - before


def test_a_restore_whose_storage_cannot_be_put_back_leaves_nothing_behind(project: Project) -> None:
    """The storage dir cannot be made: refused before the embedded cluster is created, and the data dir
    made for the restore (keys.json was in it) is removed. Once the path is fixed, the same command works."""
    blocker, env = _blocked_storage(project.parent)
    target = project.parent / f"blocked-{secrets.token_hex(3)}"
    before = {path.name for path in project.parent.iterdir()}
    failed = kilnbase("db", "restore", str(project.backup), "--data-dir", str(target), env=env)
    assert failed.returncode == 1
    assert (
        f"The storage dir (KILNBASE_STORAGE_DIR) {blocker / 'storage'} cannot be made (Not a directory)"
        in (failed.stderr)
    ), failed.stderr
    assert "Nothing was left behind: the data dir and the storage dir are as found." in failed.stderr
    assert "Traceback" not in failed.stderr and len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert not target.exists() and blocker.is_file()
    assert _leftovers(project.parent, before) == set()

    blocker.unlink()
    blocker.mkdir()
    retried = kilnbase("db", "restore", str(project.backup), "--data-dir", str(target), env=env)
    assert retried.returncode == 0, retried.stderr
    assert [p for p in (blocker / "storage").rglob("*") if p.is_file()]
    assert (target / "keys.json").is_file()
    shutil.rmtree(target)
    shutil.rmtree(blocker)


def _inheriting_authenticator(roles: bytes) -> bytes:
    """roles.json with the authenticator INHERIT, which it must never be: it is created so, then refused."""
    edited = json.loads(roles)
    for role in edited:
        if role["name"] == "kilnbase_authenticator":
            role["inherit"] = True
    return json.dumps(edited).encode()


@pytest.mark.parametrize(
    ("member", "change", "message"),
    [
        ("database.dump", _cut, "pg_restore failed (1), and rolled back"),
        ("roles.json", _inheriting_authenticator, "The role kilnbase_authenticator must be a NOINHERIT"),
    ],
)
def test_a_restore_that_fails_in_the_embedded_cluster_leaves_no_data_dir(
    project: Project, member: str, change: Callable[[bytes], bytes], message: str
) -> None:
    """It fails after the cluster was created, the roles made and keys and storage put back: pg_restore
    stops halfway, or the authenticator (checked before the dump is restored now, once after the commit)
    is not what it must be. The data dir (cluster, keys and storage) goes, and the cluster is stopped."""
    file = project.parent / f"late-{secrets.token_hex(3)}.tar"
    changed = _repacked_with(project.backup, file, {member: change})
    target = project.parent / f"late-{secrets.token_hex(3)}"
    failed = kilnbase("db", "restore", str(changed), "--data-dir", str(target))
    assert failed.returncode == 1
    assert message in failed.stderr, failed.stderr
    assert "Nothing was left behind: the data dir is as found." in failed.stderr
    assert "Traceback" not in failed.stderr
    # (it failed late: after the storage went back and the roles the database needs were made)
    assert "Putting back" in failed.stderr and re.search(r"Created [1-9][0-9]* role\(s\)", failed.stderr)
    assert not target.exists()
    assert postgres_processes(target) == []
    changed.unlink()
    retried = kilnbase("db", "restore", str(project.backup), "--data-dir", str(target))
    assert retried.returncode == 0, retried.stderr
    shutil.rmtree(target)


def test_a_dump_whose_migrations_are_not_the_manifests_is_refused_before_the_database(
    project: Project,
) -> None:
    """The migrations are checked from the file, before the cluster is created (not after the commit)."""

    manifest = json.loads(_members(project.backup)["manifest.json"])
    manifest["migrations"].pop()
    edited = _repacked_with(
        project.backup,
        project.parent / f"fewer-{secrets.token_hex(3)}.tar",
        {"manifest.json": lambda _data: json.dumps(manifest).encode()},
    )
    target = project.parent / f"fewer-{secrets.token_hex(3)}"
    refused = kilnbase("db", "restore", str(edited), "--data-dir", str(target))
    assert refused.returncode == 1
    count = len(manifest["migrations"])
    assert f"the migrations in its database.dump ({count + 1}) are not its manifest's ({count})" in (
        refused.stderr
    ), refused.stderr
    assert "Starting PostgreSQL" not in refused.stderr and "Traceback" not in refused.stderr
    assert not target.exists()
    edited.unlink()


# --- DATABASE_URL on PostgreSQL 15 ------------------------------------------------------------------------

EXTERNAL = make_conninfo(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3)


@pytest.fixture(scope="module")
def new_database() -> Iterator[Any]:
    """Makes a new, empty kb_restore_* database on the machine's PostgreSQL 15 and returns its conninfo;
    every one is dropped at the end."""
    try:
        with psycopg.connect(EXTERNAL) as conn:
            version = conn.info.server_version
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 (user postgres) to restore into: {exc}")
    if not 150000 <= version < 170000:
        pytest.skip(f"the PostgreSQL at 127.0.0.1:5432 is {version // 10000}, not 15 or 16")
    names: list[str] = []

    def create() -> str:
        name = f"kb_restore_{secrets.token_hex(4)}"
        with psycopg.connect(EXTERNAL, autocommit=True) as conn:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        names.append(name)
        return make_conninfo(EXTERNAL, dbname=name)

    try:
        yield create
    finally:
        with psycopg.connect(EXTERNAL, autocommit=True) as conn:
            for name in names:
                conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def project_on_15(new_database: Any) -> Iterator[Project]:
    """A project whose database is on PostgreSQL 15 (DATABASE_URL), populated and backed up while it runs."""
    parent = Path(tempfile.mkdtemp(prefix="kbbackup15-", dir="/tmp"))
    parent.chmod(0o755)
    data_dir = parent / "original"
    database = new_database()
    server = ServerProcess(data_dir, env={"DATABASE_URL": database})
    try:
        server.start()
        keys = json.loads((data_dir / "keys.json").read_text())
        email, user_id, access = _populate(server.url, keys["api_key"], keys["anon_key"])
        backup = parent / "project.tar"
        on_15 = {"DATABASE_URL": database}
        made = kilnbase("db", "backup", "--data-dir", str(data_dir), "--output", str(backup), env=on_15)
        assert made.returncode == 0, made.stderr
        assert server.stop() in (0, -signal.SIGTERM)
        yield Project(parent, data_dir, backup, made.stderr, keys["api_key"], email, user_id, access)
    finally:
        server.kill()
        shutil.rmtree(parent, ignore_errors=True)


def _state(conninfo: str) -> dict[str, Any]:
    """What a database holds, as far as a restore could change it (and the cluster's roles)."""
    with psycopg.connect(conninfo) as conn:
        return {
            "schemas": conn.execute("select nspname from pg_namespace order by 1").fetchall(),
            "relations": conn.execute(
                "select relnamespace::regnamespace::text, relname from pg_class order by 1, 2"
            ).fetchall(),
            "functions": conn.execute("select count(*) from pg_proc").fetchall(),
            "roles": conn.execute("select rolname from pg_roles order by 1").fetchall(),
        }


@pytest.mark.external_postgres
def test_a_project_on_postgres_15_is_restored_into_postgres_15(
    project_on_15: Project, new_database: Any
) -> None:
    manifest = json.loads(_members(project_on_15.backup)["manifest.json"])
    assert manifest["postgres_server_version"].startswith("15.")
    assert manifest["database"]["source"] == "DATABASE_URL"
    target, database = project_on_15.parent / "restored", new_database()
    restored = kilnbase(
        "db", "restore", str(project_on_15.backup), "--data-dir", str(target), env={"DATABASE_URL": database}
    )
    assert restored.returncode == 0, restored.stderr
    assert "PostgreSQL 15: pg_restore's script runs through psql" in restored.stderr
    assert not (target / "pgdata").exists()

    server = ServerProcess(target, env={"DATABASE_URL": database})
    server.start()
    try:
        assert "Applied" not in server.output()
        _serves_what_the_backup_held(server.url, project_on_15)
    finally:
        server.stop()
    with psycopg.connect(database) as conn:
        assert conn.execute(
            "select tableowner::text, rowsecurity from pg_tables where tablename = 'notes'"
        ).fetchall() == [("project_admin", True)]
        assert conn.execute(
            "select polname::text from pg_policy where polrelid = 'public.notes'::regclass order by 1"
        ).fetchall() == [("own_notes",), ("project_admin_policy",)]


@pytest.mark.external_postgres
def test_a_restore_into_postgres_15_that_fails_midway_changes_nothing(
    project_on_15: Project, new_database: Any
) -> None:
    database = new_database()
    with psycopg.connect(database) as conn:  # (a table the dump creates too, well after its first objects)
        conn.execute("create table public.notes (kept text)")
        conn.execute("insert into public.notes values ('as it was')")
    before = _state(database)
    target = project_on_15.parent / f"failed-{secrets.token_hex(3)}"
    failed = kilnbase(
        "db", "restore", str(project_on_15.backup), "--data-dir", str(target), env={"DATABASE_URL": database}
    )
    assert failed.returncode == 1
    assert "The restore failed, and was rolled back: psql stopped (3)" in failed.stderr, failed.stderr
    assert 'relation "notes" already exists' in failed.stderr
    assert "Nothing was left behind: the data dir, DATABASE_URL's database and the server's roles" in (
        failed.stderr
    )
    assert "Traceback" not in failed.stderr
    assert not target.exists()
    assert _state(database) == before
    with psycopg.connect(database) as conn:
        assert conn.execute("select kept from public.notes").fetchall() == [("as it was",)]


@pytest.mark.external_postgres
def test_a_dump_pg_restore_cannot_finish_commits_nothing(project_on_15: Project, new_database: Any) -> None:
    """pg_restore stopping halfway ends psql's input before the script's COMMIT: nothing is kept."""
    dump = _members(project_on_15.backup)["database.dump"]
    cut = project_on_15.parent / f"cut-{secrets.token_hex(3)}.dump"
    # The table data comes last: pg_restore writes the schema and most rows, then fails on the last table's.
    cut.write_bytes(dump[:-16])
    database = new_database()
    before = _state(database)
    with pytest.raises(RestoreError, match=r"rolled back: pg_restore failed \(1\): .*pg_restore: error"):
        _restore_through_psql(database, cut)
    assert _state(database) == before
    cut.unlink()


@pytest.mark.external_postgres
def test_a_restore_into_postgres_15_whose_storage_cannot_be_put_back_leaves_nothing_behind(
    project_on_15: Project, new_database: Any
) -> None:
    """The case that once left the restored schema in the database: storage is put back before the
    database is touched now, so the database is as it was, and the same command works once fixed."""
    database = new_database()
    before = _state(database)
    blocker, env = _blocked_storage(project_on_15.parent)
    env["DATABASE_URL"] = database
    target = project_on_15.parent / f"blocked-{secrets.token_hex(3)}"
    failed = kilnbase("db", "restore", str(project_on_15.backup), "--data-dir", str(target), env=env)
    assert failed.returncode == 1
    assert "cannot be made (Not a directory): pick another path." in failed.stderr, failed.stderr
    assert (
        "Nothing was left behind: the data dir, the storage dir, DATABASE_URL's database and the server's "
        "roles are as found."
    ) in failed.stderr
    assert "Traceback" not in failed.stderr and len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert not target.exists() and blocker.is_file()
    assert _state(database) == before

    blocker.unlink()
    blocker.mkdir()
    retried = kilnbase("db", "restore", str(project_on_15.backup), "--data-dir", str(target), env=env)
    assert retried.returncode == 0, retried.stderr
    assert [p for p in (blocker / "storage").rglob("*") if p.is_file()]
    shutil.rmtree(target)
    shutil.rmtree(blocker)


@pytest.mark.external_postgres
def test_a_restore_into_postgres_15_that_fails_late_drops_the_roles_it_created(
    project_on_15: Project, new_database: Any
) -> None:
    """pg_restore fails after the roles were created (one this cluster lacks, kb_restore_role_*), keys.json
    written and storage put back: the transaction rolls back, the role is dropped, the files go. The roles
    that were there before (the request roles, the authenticator) are left as they were."""
    role = f"kb_restore_role_{secrets.token_hex(4)}"

    def add_role(data: bytes) -> bytes:
        roles = json.loads(data)
        words = ("superuser", "inherit", "createrole", "createdb", "login", "replication", "bypassrls")
        roles.append(
            {
                "name": role,
                **dict.fromkeys(words, False),
                "connlimit": -1,
                "password": None,
                "member_of": ["anon"],
            }
        )
        return json.dumps(roles).encode()

    parent = project_on_15.parent
    cut = _repacked_with(
        project_on_15.backup, parent / f"cut-{role}.tar", {"roles.json": add_role, "database.dump": _cut}
    )
    whole = _repacked_with(project_on_15.backup, parent / f"whole-{role}.tar", {"roles.json": add_role})
    database = new_database()
    before = _state(database)
    target = parent / f"late-{secrets.token_hex(3)}"
    try:
        failed = kilnbase(
            "db", "restore", str(cut), "--data-dir", str(target), env={"DATABASE_URL": database}
        )
        assert failed.returncode == 1
        assert f"Created 1 role(s): {role}" in failed.stderr, failed.stderr
        assert "The restore failed, and was rolled back: pg_restore failed (1)" in failed.stderr
        assert (
            "Nothing was left behind: the data dir, DATABASE_URL's database and the server's roles are as "
            "found."
        ) in failed.stderr
        assert "Traceback" not in failed.stderr
        assert not target.exists()
        assert _state(database) == before  # (schemas, relations, functions, and the cluster's roles)

        retried = kilnbase(
            "db", "restore", str(whole), "--data-dir", str(target), env={"DATABASE_URL": database}
        )
        assert retried.returncode == 0, retried.stderr
        assert f"Created 1 role(s): {role}" in retried.stderr
    finally:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))
        shutil.rmtree(target, ignore_errors=True)
        cut.unlink()
        whole.unlink()
