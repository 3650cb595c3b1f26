"""The `kilnbase` command: serve, keys, db migrate, mcp, approvals, audit."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import json
import logging
import os
import shlex
import shutil
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import psycopg
import typer
import uvicorn
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn
from rich.style import Style
from rich.text import Text
from typer._click import Context as CommandContext  # (typer's own copy of click: TyperGroup's type)
from typer.core import TyperGroup

from kilnbase import __version__
from kilnbase.config import Settings, settings_problems, settings_source_problem, unknown_variables
from kilnbase.db.migrate import MigrationError, apply_migrations
from kilnbase.db.pool import create_pool
from kilnbase.db.roles import AuthenticatorError
from kilnbase.db.session import Database
from kilnbase.http.bind_check import bind_error
from kilnbase.keys.project_keys import KeyConfigurationError, ProjectKeys, RotatedKeys, load_project_keys
from kilnbase.keys.secret_box import SecretBox
from kilnbase.secrets import project_key_rotation
from kilnbase.server.backup import BackupError, BackupProgress, create_backup, default_file_name
from kilnbase.server.backup_archive import BackupRefused
from kilnbase.server.data_dir_errors import data_dir_error_message, data_dir_unwritable_message
from kilnbase.server.database_startup import DatabaseStartupError, connect_database_url, open_database
from kilnbase.server.embedded_postgres import EmbeddedPostgres, EmbeddedPostgresError
from kilnbase.server.encryption_key_check import adopt_encryption_key, check_encryption_key
from kilnbase.server.quiet_uvicorn import QuietServer
from kilnbase.server.restore import RestoreError, restore_backup

#: The data dir of the command being run, as `_settings` found it, for `_Commands` to name in an error.
_data_dir_in_use: ContextVar[Path | None] = ContextVar("data_dir_in_use", default=None)


class _Commands(TyperGroup):
    """The `kilnbase` command group: a data dir whose disk refuses Kilnbase (no permission, read-only, full)
    is said in one line with what to do, from whichever command and step met it, instead of a traceback."""

    def invoke(self, ctx: CommandContext) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as exc:
            message = data_dir_error_message(exc, _data_dir_in_use.get())
            if message is None:
                raise
            _fail(message)


def examples(*commands: str) -> str:
    """The end of a command's help: a few ways to call it, one a line, each ready to paste."""
    return "Examples:\n" + "\n".join(f"  {command}" for command in commands)


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    help="Kilnbase: an agent-native backend.",
    epilog=examples(
        "kilnbase serve            # start (the first start creates ./.kilnbase)",
        "kilnbase keys             # its URL, keys and the dashboard's sign-in",
        "kilnbase COMMAND --help   # a command's options, with examples",
    ),
)
db_app = typer.Typer(
    no_args_is_help=True,
    help="Database maintenance.",
    epilog=examples(
        "kilnbase db migrate --data-dir ./shop",
        "kilnbase db backup --data-dir ./shop --output shop.tar",
        "kilnbase db restore shop.tar --data-dir ./shop-restored",
    ),
)
app.add_typer(db_app, name="db")
console = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[
    Path | None,
    # (Not click's readable check: its error says what is wrong but not what to do; `_Commands` does both.)
    typer.Option("--data-dir", readable=False, help="Where the database and keys live [./.kilnbase]."),
]
Host = Annotated[str | None, typer.Option("--host", help="Interface to listen on [127.0.0.1].")]
Port = Annotated[
    int | None, typer.Option("--port", min=1, max=65535, help="Port to listen on [7130, or $PORT].")
]
Workers = Annotated[
    int,
    typer.Option(
        "--workers", min=1, max=64, help="API processes; more than 1 serves with granian, one per core."
    ),
]

_KNOWN_ERRORS = (
    KeyConfigurationError,
    EmbeddedPostgresError,
    DatabaseStartupError,
    MigrationError,
    AuthenticatorError,
)


def _settings(data_dir: Path | None = None, host: str | None = None, port: int | None = None) -> Settings:
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    try:
        settings = Settings(**overrides)
    except (ValidationError, SettingsError) as exc:
        found = settings_problems(exc) if isinstance(exc, ValidationError) else [settings_source_problem(exc)]
        problems = "\n".join(f"  {line}" for line in found)
        _fail(f"The settings are not valid:\n{problems}\nSet them right in the environment and try again.")
        raise  # (not reached: `_fail` exits)
    _data_dir_in_use.set(settings.data_dir)
    return settings


def _warn_unknown_variables() -> None:
    """A `KILNBASE_*` variable Kilnbase does not read is most likely a typo, whose setting then silently keeps
    its default: said once at start, with the name meant when one is close."""
    for name, meant in unknown_variables(os.environ):
        hint = f" Did you mean {meant}?" if meant else " README.md lists the settings."
        console.print(f"[bold yellow]Warning:[/] {name} is not a Kilnbase setting and is ignored.{hint}")


def _progress(message: str) -> None:
    """A step, said as text: messages name paths and URLs (`[draft] shop`, `http://[::1]:7130`), which rich
    would otherwise take for its markup and drop."""
    console.print(f"[dim]•[/] {escape(message)}")


def _fail(message: str) -> None:
    console.print(f"[bold red]Error:[/] {escape(message)}")
    raise typer.Exit(1)


def _check_port_free(host: str, port: int) -> None:
    error = bind_error(host, port)
    if error is None:
        return
    if error.errno in (errno.EADDRINUSE, errno.EACCES):
        _fail(f"Cannot listen on {host}:{port} ({error.strerror}). Stop what uses it, or pass --port.")
    # (a name that does not resolve, or an address this machine does not have: the host is what is wrong)
    _fail(
        f"Cannot listen on {host}:{port} ({error.strerror}): it is not an address of this machine. Pass "
        "--host (or set KILNBASE_HOST) to one it has: 127.0.0.1, or 0.0.0.0 for every interface."
    )


def _check_data_dir_writable(data_dir: Path) -> None:
    """Create the data dir and write a file in it, before anything else is started: a read-only disk, a full
    one or a path through a file otherwise surfaced from whichever step wrote first. Said as every command
    says a refusal of the data dir's disk (`data_dir_errors.py`)."""
    probe = data_dir / f".write-check-{os.getpid()}"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        if exc.filename is not None and Path(os.fsdecode(exc.filename)) == probe:
            exc = OSError(exc.errno, exc.strerror)  # (the probe is ours: the data dir is what to name)
        _fail(data_dir_unwritable_message(exc, data_dir))


def _import_early(module: str) -> None:
    """Start importing `module` in a thread while this one brings the database up.

    Importing the app takes 1.2 to 1.5 s here (pydantic models, the MCP SDK, socket.io), and the database
    takes 0.3 s to start again and 2 to 3 s to create: a thread that imports meanwhile takes the shorter of
    the two off every start. Python's import lock makes this safe: a plain `import` of the same module later
    waits for this one to finish and gets the module, or, if this import failed, imports it again itself and
    raises the error where it would have been raised anyway. So nothing from this thread is read here."""

    def load() -> None:
        with contextlib.suppress(Exception):  # raised again by the import that matters (above)
            importlib.import_module(module)

    threading.Thread(target=load, name=f"import {module}", daemon=True).start()


class _LastError(logging.Handler):
    """The last error uvicorn logged. When the app's startup fails, uvicorn logs the traceback (to the JSON
    log on standard output) and exits; the traceback's last line is the cause, for the terminal."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.cause: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        lines = [line for line in record.getMessage().strip().splitlines() if line.strip()]
        if lines and lines[-1] != "Application startup failed. Exiting.":
            self.cause = lines[-1].strip()


class _AnnouncingServer(QuietServer):
    """uvicorn (woken only when there is something to do), plus a banner once the socket is really
    listening, and the cause when the app could not start (`startup_error`)."""

    def __init__(self, config: uvicorn.Config, settings: Settings, functions_host: bool) -> None:
        super().__init__(config)
        self.settings = settings
        self.functions_host = functions_host
        self.startup_error: str | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        witness = _LastError()
        logging.getLogger("uvicorn.error").addHandler(witness)
        try:
            await super().startup(sockets)
        except SystemExit:  # (uvicorn's way out of a failed startup)
            self.startup_error = witness.cause or "see the errors logged above"
            raise
        finally:
            logging.getLogger("uvicorn.error").removeHandler(witness)
        if self.started:
            _announce(self.settings, functions_host=self.functions_host)


def command_path() -> str:
    """How to run this `kilnbase` from the current directory: `kilnbase` when that name on PATH is this
    install, else the script beside this Python (`.venv/bin/kilnbase` after `make run`), relative to the
    current directory when it is below it."""
    script = Path(sys.executable).parent / "kilnbase"
    if not script.exists():
        return f"{sys.executable} -m kilnbase"
    on_path = shutil.which("kilnbase")
    if on_path is not None and Path(on_path).resolve() == script.resolve():
        return "kilnbase"
    try:
        return os.fspath(script.absolute().relative_to(Path.cwd()))
    except ValueError:
        return os.fspath(script.absolute())


def _shell_path(path: Path) -> str:
    """A path as it is typed in a shell: quoted when it holds spaces, so a printed command can be pasted."""
    return shlex.quote(os.fspath(path))


#: The URL the data dir's server last announced, for the commands that print or call it.
SERVED_URL_FILE = "served-url"


def _remember_url(settings: Settings) -> None:
    """Keep the URL being served in the data dir: `serve --port P` is not a setting `keys` or `approvals`
    can see, and without this they would name the default port."""
    with contextlib.suppress(OSError):
        (settings.data_dir / SERVED_URL_FILE).write_text(settings.base_url + "\n")


def _project_url(settings: Settings) -> str:
    """The data dir's URL: the one its server last announced, unless the environment names one."""
    if settings.model_fields_set & {"host", "port", "public_url"}:
        return settings.base_url
    try:
        return (settings.data_dir / SERVED_URL_FILE).read_text().strip() or settings.base_url
    except OSError:
        return settings.base_url


def _functions_host_port_free(settings: Settings) -> bool:
    """Whether this server's functions host can have its port. When another program (often a second project's
    server) holds it, the host stays off here and the URL printed would reach that program's functions: say
    so before starting, and leave the URL out of the banner."""
    host_port = settings.functions.host_port
    if not host_port:
        return True
    error = bind_error(settings.host, host_port)
    if error is None:
        return True
    console.print(
        f"[yellow]Warning:[/] the functions host's port {host_port} is in use ({error.strerror}), so this "
        "server's functions host waits for it (functions still answer at /functions/<slug>). Set "
        "KILNBASE_FUNCTIONS_HOST_PORT to a free port, or to 0 to turn the host off."
    )
    return False


def _announce(settings: Settings, how: str = "", *, functions_host: bool = True) -> None:
    _remember_url(settings)
    url = settings.base_url
    # (The URL and paths are text, not markup: `http://[::1]:7130` or a data dir named `[draft]` would be read
    # as rich's tags, and a link tag cannot hold brackets at all, so the link is a style.)
    ready = Text.assemble(
        (f"Kilnbase {__version__} is ready", "bold green"), " at ", (url, Style(link=url)), f" {how}".rstrip()
    )
    console.print(ready)
    console.print(f"  Dashboard: {escape(url)}/dashboard")
    host_port = settings.functions.host_port
    if host_port and functions_host:
        functions_url = f"http://{settings.local_url_host}:{host_port}"
        console.print(
            f"  Functions: {escape(functions_url)} (the functions host: createClient({{ functionsUrl }}))"
        )
    console.print(
        f"  Keys:      {escape(str(settings.keys_path.resolve()))}"
        f" (print them, and the root admin's password, with: "
        f"{escape(command_path())} keys --data-dir {escape(_shell_path(settings.data_dir))})"
    )


@app.command(
    epilog=examples(
        "kilnbase serve",
        "kilnbase serve --port 8000 --data-dir ./shop    # a second project",
        "DATABASE_URL=postgresql://app@db/app kilnbase serve --workers 2",
    )
)
def serve(data_dir: DataDir = None, host: Host = None, port: Port = None, workers: Workers = 1) -> None:
    """Start the server (and the embedded PostgreSQL unless DATABASE_URL is set)."""
    from kilnbase.structured_log import configure_logging

    settings = _settings(data_dir, host, port)
    configure_logging(settings.log_level)
    _warn_unknown_variables()
    _check_port_free(settings.host, settings.port)
    functions_host = _functions_host_port_free(settings)
    if not settings.database_url:
        _check_data_dir_writable(settings.data_dir)
    if workers == 1:  # (granian's workers import the app themselves)
        _import_early("kilnbase.app")
    report = _progress
    try:
        project_keys = load_project_keys(settings)
        database = open_database(settings, project_keys, report)
    except _KNOWN_ERRORS as exc:
        _fail(str(exc))
        return
    if workers > 1:
        from kilnbase.workers import serve_with_workers

        report(f"Starting {workers} API workers")
        how = f"with {workers} workers (granian)"
        try:
            serve_with_workers(
                settings, database, workers, lambda: _announce(settings, how, functions_host=functions_host)
            )
        finally:
            if database.embedded is not None:
                report("Stopping PostgreSQL")
            database.close()
        return
    try:
        from kilnbase.app import create_app  # (waits for `_import_early`'s import, or makes it here)

        application = create_app(settings, progress=report, database=database)
    except BaseException:
        database.close()  # (the app's lifespan closes it, once there is an app)
        raise
    config = uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        # The client address is Kilnbase's to decide (`http/client_address.py`, KILNBASE_TRUSTED_PROXIES):
        # uvicorn's own rule would believe X-Forwarded-For from any loopback peer.
        proxy_headers=False,
        # No permessage-deflate on WebSockets (realtime): compressing every frame for every subscriber was a
        # fifth of a fan-out's CPU, for messages of a few hundred bytes; Node's socket.io declines it too.
        ws_per_message_deflate=False,
        # No WebSocket-level pings either: Engine.IO pings every socket itself and closes those that stop
        # answering; uvicorn's own, every 20 s to every socket, doubled that work for nothing.
        ws_ping_interval=None,
        timeout_graceful_shutdown=10,
    )
    server = _AnnouncingServer(config, settings, functions_host)
    try:
        server.run()
    except SystemExit:
        if server.startup_error is None:
            raise
    if server.startup_error is not None:
        _fail(
            f"Kilnbase could not start: {server.startup_error}. The server's log (standard output) holds the "
            "whole traceback; fix what it names and start again."
        )
    if not server.started:
        raise typer.Exit(1)


@app.command(
    epilog=examples(
        "kilnbase keys",
        "kilnbase keys --data-dir ./shop | jq -r .apiKey",
    )
)
def keys(data_dir: DataDir = None) -> None:
    """Print the project's URL, its current keys (after any rotation) and the dashboard's sign-in, as JSON."""
    settings = _settings(data_dir)
    if not settings.keys_path.exists():  # (a key file that is damaged is said by loading it)
        # Loading would create a new project's keys here, which is never what `keys` is asked for.
        _fail(
            f"No keys exist in {settings.data_dir} (no {settings.keys_path.name} there). Kilnbase creates "
            f"them when the server first starts: {command_path()} serve "
            f"--data-dir {_shell_path(settings.data_dir)}. "
            "Check the path if the project is elsewhere."
        )
        return
    try:
        project_keys = load_project_keys(settings)
        rotated = _rotated_keys(settings, project_keys)
    except _KNOWN_ERRORS as exc:
        _fail(str(exc))
        return
    current = rotated[0] if rotated else {}
    json.dump(
        {
            "url": _project_url(settings),
            "apiKey": current.get("api_key", project_keys.api_key),
            "anonKey": current.get("anon_key", project_keys.anon_key),
            "rootAdmin": {
                "username": settings.root_admin_username,
                "password": project_keys.root_admin_password,
            },
        },
        sys.stdout,
        indent=2,
    )
    sys.stdout.write("\n")


@contextlib.contextmanager
def _owner_conninfo(
    settings: Settings, project_keys: ProjectKeys, progress: Callable[[str], None] | None = None
) -> Iterator[str | None]:
    """The owner's conninfo for a short read: `DATABASE_URL`, the running server's cluster, or the embedded
    one started for the while; None for a project that never started. A database that cannot be reached or
    started is said as `_fail` says it, whichever command asked."""
    if settings.database_url:
        _check_database_url(settings.database_url)
        yield settings.database_url
        return
    cluster = EmbeddedPostgres(settings.data_dir, project_keys.postgres_password, progress=progress)
    if not cluster.initialised:
        yield None
        return
    running = cluster.running_conninfo()
    if running is not None:
        yield running
        return
    try:
        conninfo = cluster.start()
    except _KNOWN_ERRORS as exc:
        _fail(str(exc))
        return
    try:
        yield conninfo
    finally:
        if progress is not None:
            progress("Stopping PostgreSQL")
        cluster.stop()


def _require_project(settings: Settings) -> None:
    """Commands that read a project (`approvals`, `audit`, `mcp`) refuse a data dir that holds none: loading
    its keys would make a new project there, and the command would then answer as if the path were right ("no
    tool calls recorded"), call the default URL with a key no server knows, or offer an agent an empty
    project. With `DATABASE_URL`, the keys may come from the environment and the database is elsewhere, so an
    empty data dir is a real project's."""
    if settings.database_url or settings.keys_path.exists():
        return
    _fail(
        f"No project in {settings.data_dir} (no {settings.keys_path.name} there). Pass the --data-dir "
        "(or KILNBASE_DATA_DIR) that kilnbase serve was started with."
    )


def _check_database_url(conninfo: str) -> None:
    """Connect to `DATABASE_URL` once before using it: a refusal is then said in one line, with what to
    check, and a URL libpq cannot parse is never quoted (its text holds the password)."""
    try:
        connect_database_url(conninfo).close()
    except DatabaseStartupError as exc:
        _fail(str(exc))


def _rotated_keys(settings: Settings, project_keys: ProjectKeys) -> RotatedKeys | None:
    """Keys rotated through the API live in the database. A project that never started has none."""
    with _owner_conninfo(settings, project_keys) as conninfo:
        if conninfo is None:
            return None
        check_encryption_key(conninfo, project_keys, settings)  # (they are sealed with it)
        return asyncio.run(_load_rotated_keys(conninfo, settings, project_keys))


async def _load_rotated_keys(
    conninfo: str | None, settings: Settings, project_keys: ProjectKeys
) -> RotatedKeys | None:
    assert conninfo is not None
    pool = create_pool(conninfo, settings.model_copy(update={"db_owner_pool_min": 1}), owner=True)
    await pool.open(wait=True, timeout=30)
    try:
        # Only the owner's reads happen here: one pool serves as both.
        return await project_key_rotation.load(Database(pool, pool), SecretBox(project_keys.encryption_key))
    except psycopg.errors.UndefinedTable:  # not migrated yet: nothing was rotated
        return None
    finally:
        await pool.close()


@db_app.command("migrate", epilog=examples("kilnbase db migrate", "kilnbase db migrate --data-dir ./shop"))
def migrate(data_dir: DataDir = None) -> None:
    """Apply pending migrations without serving (and make the request role ready)."""
    settings = _settings(data_dir)
    opened = None
    try:
        project_keys = load_project_keys(settings)
        with console.status("Applying migrations"):
            opened = open_database(settings, project_keys, _progress)
    except _KNOWN_ERRORS as exc:
        _fail(str(exc))
        return
    finally:
        if opened is not None:
            opened.close()
    if not opened.applied:
        console.print("The database is up to date.")


@db_app.command(
    "adopt-encryption-key",
    epilog=examples(
        "ENCRYPTION_KEY=$(openssl rand -hex 32) kilnbase db adopt-encryption-key --data-dir ./shop",
    ),
)
def adopt_key(data_dir: DataDir = None) -> None:
    """Make the encryption key in force the project's when the key it was started with is lost (serve refuses
    any other): what the old key sealed stays unreadable until set again; nothing is rewritten or removed."""
    settings = _settings(data_dir)
    _require_project(settings)
    try:
        project_keys = load_project_keys(settings)
        with _owner_conninfo(settings, project_keys, _progress) as conninfo:
            if conninfo is None:
                _fail(f"The project in {settings.data_dir} never started: it has no key to replace.")
                return
            apply_migrations(conninfo)  # (a database from before the check has no place for it yet)
            try:
                check_encryption_key(conninfo, project_keys, settings)
            except KeyConfigurationError:
                adopt_encryption_key(conninfo, project_keys)
            else:
                console.print("The encryption key in force is already the project's: nothing changed.")
                return
    except _KNOWN_ERRORS as exc:
        _fail(str(exc))
        return
    console.print(
        "The encryption key in force is now the project's. Set again what the old key sealed: each secret, "
        "AI provider key, OAuth and webhook secret, and the values of encrypted columns."
    )


@db_app.command(
    "backup",
    epilog=examples(
        "kilnbase db backup",
        "kilnbase db backup --data-dir ./shop --output /backups/shop.tar",
        "DATABASE_URL=postgresql://app@db/app kilnbase db backup --output app.tar",
    ),
)
def backup(
    data_dir: DataDir = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", help="The file to write [./kilnbase-backup-<UTC time>.tar]."),
    ] = None,
) -> None:
    """Back up the project into one file: its database, roles, keys and local storage (running or not)."""
    settings = _settings(data_dir)
    if not settings.keys_path.exists():
        _fail(
            f"No project in {settings.data_dir} (no {settings.keys_path.name} there): nothing to back up. "
            "Check --data-dir."
        )
    target = (output or Path(default_file_name())).absolute()
    try:
        project_keys = load_project_keys(settings)
        with _byte_progress() as count_bytes:
            progress = BackupProgress(step=_progress, bytes=count_bytes)
            with _owner_conninfo(settings, project_keys, _progress) as conninfo:
                if conninfo is None:
                    _fail(f"No database in {settings.data_dir} yet: nothing to back up. Check --data-dir.")
                    return
                result = create_backup(
                    settings, conninfo, target, progress, embedded=not settings.database_url
                )
    except (*_KNOWN_ERRORS, BackupError) as exc:
        _fail(str(exc))
        return
    storage = result.manifest["storage"]
    if storage["included"]:
        _progress(f"Storage: {storage['files']} file(s), {_size(storage['bytes'])}")
    else:
        console.print(
            f"[bold yellow]Storage is on S3[/] (bucket {storage['bucket']}): its objects are not in this "
            "file. Back the bucket up with the store's own tools."
        )
    console.print(f"[bold green]Backup written:[/] {escape(str(result.path))} ({_size(result.size)})")
    console.print(
        "  It holds the project's keys and secrets, so it was created with mode 0600: keep it as safe as "
        "keys.json."
    )
    console.print(f"  Restore it with: {command_path()} db restore {_shell_path(result.path)} --data-dir DIR")


@db_app.command(
    "restore",
    epilog=examples(
        "kilnbase db restore kilnbase-backup-20260101T120000Z.tar --data-dir ./restored",
        "DATABASE_URL=postgresql://app@db/new kilnbase db restore app.tar --data-dir ./app",
    ),
)
def restore(
    file: Annotated[Path, typer.Argument(help="A file written by kilnbase db backup.")],
    data_dir: DataDir = None,
) -> None:
    """Restore a backup into an empty data dir (and an empty DATABASE_URL database); never overwrites."""
    settings = _settings(data_dir)
    try:
        with console.status("Restoring"):
            result = restore_backup(settings, file, _progress)
    except (*_KNOWN_ERRORS, BackupRefused, RestoreError) as exc:
        _fail(str(exc))
        return
    manifest = result.manifest
    console.print(
        f"[bold green]Restored[/] the backup of {manifest['created_at']} (Kilnbase "
        f"{manifest['kilnbase_version']}) into {escape(str(settings.data_dir))}"
    )
    if manifest["storage"]["backend"] == "s3":
        console.print(f"  Its storage was on S3 (bucket {manifest['storage']['bucket']}), not in the file.")
    if result.newer_migrations:
        console.print(f"  The first start applies {result.newer_migrations} newer migration(s).")
    console.print(f"  Start it with: {command_path()} serve --data-dir {_shell_path(settings.data_dir)}")


@contextlib.contextmanager
def _byte_progress() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A progress bar of bytes copied, for each count started with the function yielded."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn())
    with Progress(*columns, console=console, transient=True) as bar:

        def count(description: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(description, total=total)
            return lambda done: bar.advance(task, done)

        yield count


def _size(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size:,.1f} TB"


@app.command(
    "mcp",
    epilog=examples(
        "kilnbase mcp --data-dir /path/to/project/.kilnbase",
        "kilnbase mcp --read-only --features database,storage",
        "KILNBASE_API_KEY=ik_... kilnbase mcp    # as an agent key, with its scopes",
    ),
)
def mcp_stdio(
    data_dir: DataDir = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="KILNBASE_API_KEY",
            help="The agent's credential: API key, anon key or access token \\[the project's API key].",
        ),
    ] = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Offer only tools that change nothing.")
    ] = False,
    features: Annotated[
        str | None, typer.Option("--features", help="Only these feature groups, e.g. database,auth.")
    ] = None,
) -> None:
    """Serve the MCP tools over stdio for a local coding agent (beside a running server, or on its own)."""
    from kilnbase.app import serve_mcp_stdio
    from kilnbase.identity.principal import CredentialError
    from kilnbase.mcp_server.access import Narrowing, UnknownFeatureGroups
    from kilnbase.structured_log import configure_logging

    settings = _settings(data_dir)
    configure_logging("warning", sys.stderr)  # standard output carries the protocol
    _require_project(settings)  # (an agent given a mistyped path would otherwise work on a new, empty one)
    try:
        project_keys = load_project_keys(settings)
    except _KNOWN_ERRORS as exc:
        _fail(str(exc))
        return
    opened = None
    if settings.database_url:
        _check_database_url(settings.database_url)
    conninfo = (
        settings.database_url
        or EmbeddedPostgres(settings.data_dir, project_keys.postgres_password).running_conninfo()
    )
    try:
        if conninfo is None:  # no server running on this data dir: start the database for this session
            opened = open_database(settings, project_keys, _progress)
            conninfo = opened.conninfo
        else:  # (the start that made the server checked its key, not this process's)
            check_encryption_key(conninfo, project_keys, settings)
    except _KNOWN_ERRORS as exc:
        _fail(str(exc))
        return
    if api_key is None:
        console.print("[dim]•[/] acting with the project's API key; pass --api-key for a narrower credential")
    narrowing = Narrowing.parse(read_only, features.split(",") if features else None)
    try:
        asyncio.run(serve_mcp_stdio(settings, conninfo, api_key, narrowing))
    except CredentialError as exc:
        _fail(f"The credential given with --api-key (or KILNBASE_API_KEY) is not valid: {exc}.")
    except UnknownFeatureGroups as exc:
        _fail(f"--features: {exc}.")
    finally:
        if opened is not None:
            opened.close()


approvals_app = typer.Typer(
    no_args_is_help=True,
    help="Change requests agents made, for a person to decide.",
    epilog=examples(
        "kilnbase approvals list", "kilnbase approvals approve ID --note 'checked with the team'"
    ),
)
app.add_typer(approvals_app, name="approvals")
Url = Annotated[str | None, typer.Option("--url", help="The running server \\[the data dir's URL].")]


def _approvals_call(
    data_dir: Path | None,
    url: str | None,
    method: str,
    path: str,
    body: Any = None,
    *,
    not_found: str | None = None,
) -> Any:
    """One call to the running server's `/api/approvals`, as the project's API key (a person at this
    machine: the same trust as reading the keys file). `not_found` is what a 404 means to the person."""
    settings = _settings(data_dir)
    _require_project(settings)
    try:
        project_keys = load_project_keys(settings)
        rotated = _rotated_keys(settings, project_keys)
    except _KNOWN_ERRORS as exc:
        _fail(str(exc))
    api_key = (rotated[0] if rotated else {}).get("api_key", project_keys.api_key)
    base = (url or _project_url(settings)).rstrip("/")
    try:
        response = httpx.request(
            method, base + path, json=body, headers={"Authorization": f"Bearer {api_key}"}, timeout=60
        )
    except httpx.HTTPError as exc:
        _fail(
            f"Could not reach the server at {base} ({type(exc).__name__}). "
            "Is it running? Pass --url when it runs elsewhere."
        )
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, (dict, list)) or (response.status_code >= 400 and not isinstance(answer, dict)):
        _fail(
            f"{base} answered {response.status_code} without Kilnbase's JSON: it is not a Kilnbase server's "
            "URL. Pass --url with the URL kilnbase serve printed (e.g. http://127.0.0.1:7130)."
        )
    if response.status_code == 404 and not_found is not None and answer.get("error") == "NOT_FOUND":
        _fail(not_found)
    if response.status_code >= 400:
        next_actions = f" {answer['nextActions']}" if answer.get("nextActions") else ""
        _fail(f"{response.status_code}: {answer.get('message', response.text)}{next_actions}")
    return answer


@approvals_app.command(
    "list",
    epilog=examples(
        "kilnbase approvals list", "kilnbase approvals list --status all --url http://10.0.0.5:7130"
    ),
)
def approvals_list(
    data_dir: DataDir = None,
    url: Url = None,
    status: Annotated[
        str, typer.Option("--status", help="pending, done, failed, rejected, expired, or all.")
    ] = "pending",
) -> None:
    """List change requests (pending ones by default)."""
    query = "" if status == "all" else f"?status={quote(status)}"
    requests = _approvals_call(data_dir, url, "GET", f"/api/approvals{query}")
    if not requests:
        console.print(f"No {'' if status == 'all' else status + ' '}change requests.")
    for request in requests:
        console.print(
            f"[bold]{request['id']}[/] {request['status']:<8} {request['tool']} by {request['requestedBy']}: "
            f"{escape(request['reason'])}\n    arguments: {escape(json.dumps(request['arguments']))}"
        )
        if request.get("file") is not None:
            console.print(f"    file: {_held_file(request['file'])}")


def _held_file(file: dict[str, Any]) -> str:
    """A held upload's file as the list shows it (its bytes left out): its size and SHA-256, to compare with
    the file the person expects."""
    if file["bytes"] is None:
        return f"{file['argument']} is not valid base64 (no size or hash)"
    return f"{file['bytes']:,} bytes, sha256 {file['sha256']} (from {file['argument']})"


def _decide(data_dir: Path | None, url: str | None, request_id: str, decision: str, note: str | None) -> Any:
    """Approve or reject one change request. The id goes in as one path segment: an id holding `/`, `..`,
    `?` or `#` would otherwise reach another route with the project's API key."""
    no_such = (
        f"No change request has the id {request_id!r}. List them, with their ids, with: "
        f"{command_path()} approvals list --status all"
    )
    path = f"/api/approvals/{quote(request_id, safe='')}/{decision}"
    return _approvals_call(data_dir, url, "POST", path, {"note": note}, not_found=no_such)


@approvals_app.command(
    "approve",
    epilog=examples(
        "kilnbase approvals approve ID", "kilnbase approvals approve ID --note 'backed up first'"
    ),
)
def approvals_approve(
    request_id: str, data_dir: DataDir = None, url: Url = None, note: str | None = None
) -> None:
    """Approve a change request: its stored call runs once, as the agent that asked."""
    decided = _decide(data_dir, url, request_id, "approve", note)
    console.print(f"{decided['status']}: {escape(json.dumps(decided['result']))}")


@approvals_app.command(
    "reject", epilog=examples("kilnbase approvals reject ID --note 'drop the column instead'")
)
def approvals_reject(
    request_id: str, data_dir: DataDir = None, url: Url = None, note: str | None = None
) -> None:
    """Reject a change request: nothing runs."""
    decided = _decide(data_dir, url, request_id, "reject", note)
    console.print(decided["status"])


audit_app = typer.Typer(
    no_args_is_help=True,
    help="Agents' sessions in the audit log, and their replay.",
    epilog=examples("kilnbase audit sessions", "kilnbase audit replay SESSION"),
)
app.add_typer(audit_app, name="audit")


def _audit_conninfo(data_dir: Path | None) -> contextlib.AbstractContextManager[str | None]:
    settings = _settings(data_dir)
    _require_project(settings)
    try:
        project_keys = load_project_keys(settings)
    except _KNOWN_ERRORS as exc:
        _fail(str(exc))
    return _owner_conninfo(settings, project_keys)


@audit_app.command(
    "sessions", epilog=examples("kilnbase audit sessions", "kilnbase audit sessions --limit 5")
)
def audit_sessions(
    data_dir: DataDir = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many sessions, the latest first.")] = 20,
) -> None:
    """The latest sessions of tool calls: who, how many calls and writes, when."""
    from kilnbase.mcp_server.replay import recent_sessions

    database = _audit_conninfo(data_dir)
    with database as conninfo:
        sessions = recent_sessions(conninfo, limit) if conninfo else []
    if not sessions:
        console.print("No tool calls recorded yet.")
    for row in sessions:
        console.print(
            f"[bold]{row['session']}[/] {row['actor']}: {row['calls']} calls, {row['writes']} writes, "
            f"{row['started']:%Y-%m-%d %H:%M:%S} to {row['ended']:%H:%M:%S}"
        )


@audit_app.command(
    "replay",
    epilog=examples(
        "kilnbase audit replay SESSION",
        "kilnbase audit replay SESSION --against http://staging:7130 --key ik_... --dry-run",
        "kilnbase audit replay SESSION --against http://staging:7130 --key ik_... --actor agent:builder",
    ),
)
def audit_replay(
    session: str,
    data_dir: DataDir = None,
    against: Annotated[
        str | None, typer.Option("--against", help="Re-run the writes on this server.")
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", envvar="KILNBASE_REPLAY_KEY", help="The credential to use there.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would run; run nothing.")] = False,
    actor: Annotated[
        str | None, typer.Option("--actor", help="Only this caller's calls (as printed after each call).")
    ] = None,
) -> None:
    """Print a session as its sequence of tool calls; with --against, re-run its writes there, in order.

    A client names its own session (`X-Agent-Session`), so another credential may have named the same one:
    each call is printed with its caller, and a session of several callers is replayed one caller at a time
    (`--actor`), so that nobody's writes ride along in another's replay."""
    from kilnbase.mcp_server.replay import RecordedCall, replay_writes, session_calls

    database = _audit_conninfo(data_dir)
    with database as conninfo:
        calls = session_calls(conninfo, session) if conninfo else []
    if not calls:
        _fail(f"No tool calls recorded for session {session!r}. List sessions with: kilnbase audit sessions")
    if actor is not None:
        calls = [call for call in calls if call.actor == actor]
        if not calls:
            _fail(f"No tool calls of {actor!r} in session {session!r}: each call is printed with its caller.")
    for number, call in enumerate(calls, 1):
        mark = "W" if call.write else "R"
        console.print(
            f"{number:>3}. {call.at:%H:%M:%S} [{mark}] {call.tool} {json.dumps(call.arguments)} -> "
            f"{call.outcome}: {call.detail[:120]} (by {call.actor})"
        )
    if against is None:
        return
    if key is None:
        _fail("--against needs --key (or KILNBASE_REPLAY_KEY): the credential to act as on that server.")
    callers = sorted({call.actor for call in calls})
    if len(callers) > 1:
        _fail(
            f"Session {session!r} holds the calls of {len(callers)} callers ({', '.join(callers)}): a client "
            "names its own session, so another may have named this one. Replay one caller's calls with "
            "--actor NAME."
        )

    def report(call: RecordedCall, what: str) -> None:
        console.print(f"  {call.tool}: {what}")

    console.print(f"Replaying the writes on {against}{' (dry run)' if dry_run else ''}:")
    failed = replay_writes(calls, against, key or "", session, report, dry_run=dry_run)
    if failed:
        _fail(f"{failed} write(s) failed on {against}.")


@app.command(epilog=examples("kilnbase version"))
def version() -> None:
    """Print Kilnbase's version."""
    print(__version__)


def main() -> None:
    app()
