"""Starts that go wrong, as a new user meets them: interrupted with Ctrl-C, on a data dir that cannot be
written, on a path with spaces. Each says plainly what happened, shows no traceback, and leaves nothing
behind that breaks the next start."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import kilnbase
from tests.support.postgres import reachable_scratch
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def scratch() -> Iterator[Path]:
    with reachable_scratch("kbstart-") as parent:
        yield parent


def _as_a_terminal_starts_it() -> None:
    """In the child, before `kilnbase` runs: Ctrl-C at its default. A process inherits an ignored SIGINT
    (a test runner's worker, or a non-interactive shell's background job, may ignore it), and Python then
    leaves it ignored: the Ctrl-C these tests send would be lost until uvicorn installs its own handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KILNBASE_", "DATABASE_URL", "PORT"))}
    return env | {"KILNBASE_FUNCTIONS_HOST_PORT": "0"}


class Serve:
    """`kilnbase serve` in its own process group, as a terminal runs it (Ctrl-C reaches the group)."""

    def __init__(
        self, data_dir: Path, log: Path, env: dict[str, str] | None = None, options: tuple[str, ...] = ()
    ) -> None:
        self.port, self.log = free_port(), log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kilnbase",
                    "serve",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(data_dir),
                    *options,
                ],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_environment() | (env or {}),
                start_new_session=True,
                preexec_fn=_as_a_terminal_starts_it,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while text not in self.output():
            assert self.process.poll() is None, (
                f"serve exited with {self.process.returncode}:\n{self.output()}"
            )
            assert time.monotonic() < deadline, f"no {text!r} in time:\n{self.output()}"
            time.sleep(0.01)

    def interrupt(self) -> int:
        """Ctrl-C, and the exit code."""
        if self.process.poll() is not None:
            return self.process.returncode
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            # (Stopped while `pg_ctl start` waits, serve lets it end, up to its 60 s, then stops Postgres, up
            # to 30 s: on a loaded machine more than a minute is not a hang.)
            return self.process.wait(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            # (What serve said last tells which stage did not stop: its progress lines and its JSON log.)
            raise AssertionError(f"serve did not stop on Ctrl-C; it said:\n{self.output()[-4000:]}") from None


def test_ctrl_c_while_postgres_is_initialised_leaves_a_data_dir_that_starts(scratch: Path) -> None:
    data_dir = scratch / "project"
    first = Serve(data_dir, scratch / "first.log")
    first.wait_for("Initialising PostgreSQL")
    deadline = time.monotonic() + 30
    while not (data_dir / "pgdata" / "PG_VERSION").exists():  # initdb is under way
        assert time.monotonic() < deadline, first.output()
        time.sleep(0.005)
    first.interrupt()
    again = Serve(data_dir, scratch / "again.log")
    try:
        again.wait_for("is ready")
        assert httpx.get(f"http://127.0.0.1:{again.port}/api/health", timeout=10).status_code == 200
    finally:
        again.interrupt()


def test_the_keys_hint_for_a_data_dir_with_spaces_can_be_pasted(scratch: Path) -> None:
    data_dir = scratch / "my project" / "data"
    serve = Serve(data_dir, scratch / "serve.log")
    try:
        serve.wait_for("keys --data-dir")
        serve.wait_for(")\n", seconds=10)  # (the whole line)
        hint = next(line for line in serve.output().splitlines() if "Keys:" in line)
        command = shlex.split(hint.split("with: ", 1)[1].removesuffix(")"))
        assert command[-2:] == ["--data-dir", str(data_dir)], hint
    finally:
        serve.interrupt()


def test_an_ipv6_host_and_a_data_dir_named_in_brackets_are_served_and_said_as_they_are(scratch: Path) -> None:
    """`--host ::1` is a URL's `[::1]`, and neither it nor a data dir named `[draft] shop` is taken for the
    terminal's markup: the server starts, and every line names them as they are."""
    data_dir = scratch / "[draft] shop"
    serve = Serve(data_dir, scratch / "serve.log", options=("--host", "::1"))
    try:
        serve.wait_for("keys --data-dir")
        serve.wait_for(")\n", seconds=10)  # (the whole line)
        url = f"http://[::1]:{serve.port}"
        assert httpx.get(f"{url}/api/health", timeout=10).status_code == 200
        lines = serve.output().splitlines()
        assert f"• Initialising PostgreSQL in {data_dir / 'pgdata'}" in lines, lines
        assert f"Kilnbase {kilnbase.__version__} is ready at {url}" in lines, lines
        assert f"  Dashboard: {url}/dashboard" in lines, lines
        assert any(line.startswith(f"  Keys:      {data_dir / 'keys.json'} (") for line in lines), lines
        assert "Traceback" not in serve.output()
    finally:
        serve.interrupt()
    assert (data_dir / "served-url").read_text().strip() == url  # (what `keys` and `approvals` call)


def test_an_app_that_fails_to_start_says_why_on_the_terminal(scratch: Path) -> None:
    """A failure in the app's own startup (here the storage dir, below a file) was logged as a traceback in
    the JSON log on standard output, and the terminal saw only Postgres start and stop, exit 3. The cause is
    now the last line on the terminal, and the embedded Postgres is stopped."""
    blocked = scratch / "a-file"
    blocked.write_text("not a folder")
    data_dir = scratch / "project"
    serve = Serve(data_dir, scratch / "serve.log", env={"KILNBASE_STORAGE_DIR": str(blocked / "storage")})
    try:
        assert serve.process.wait(timeout=120) == 1, serve.output()
    finally:
        serve.interrupt()
    terminal = [line for line in serve.output().splitlines() if not line.startswith("{")]  # (not the log)
    cause = f"NotADirectoryError: [Errno 20] Not a directory: '{blocked / 'storage' / 'incoming'}'"
    assert terminal[-2:] == [
        "• Stopping PostgreSQL",
        f"Error: Kilnbase could not start: {cause}. The server's log (standard output) holds the whole "
        "traceback; fix what it names and start again.",
    ], terminal
    assert "Traceback" not in "\n".join(terminal)
    assert not (data_dir / "pgdata" / "postmaster.pid").exists(), "Postgres was left running"


def test_a_data_dir_that_cannot_be_written_is_named_without_a_traceback(scratch: Path) -> None:
    blocked = scratch / "a-file"
    blocked.write_text("not a folder")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kilnbase",
            "serve",
            "--port",
            str(free_port()),
            "--data-dir",
            str(blocked / "data"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=_environment(),
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"Kilnbase cannot use {blocked / 'data'} (Not a directory)" in result.stderr
    assert "a part of that path is a file" in result.stderr and "--data-dir" in result.stderr


def test_a_functions_host_port_in_use_is_said_and_not_announced(scratch: Path) -> None:
    # Another program (a second project's server, say) holds the functions host's port: the banner must not
    # send clients there, and the warning says which setting to change.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        serve = Serve(scratch / "project", scratch / "serve.log", {"KILNBASE_FUNCTIONS_HOST_PORT": str(port)})
        try:
            serve.wait_for("keys --data-dir")
        finally:
            serve.interrupt()
    output = serve.output()
    assert f"Functions: http://127.0.0.1:{port}" not in output
    assert f"port {port} is in use" in output
    assert "KILNBASE_FUNCTIONS_HOST_PORT" in output


def test_a_misspelt_setting_is_named_with_the_one_meant(scratch: Path) -> None:
    """A typo in a setting's name would leave its default in force without a word."""
    serve = Serve(
        scratch / "data",
        scratch / "serve.log",
        env={"KILNBASE_DB_POL_MAX": "4", "KILNBASE_LOG_LEVEL": "info", "KILNBASE_NOTHING_LIKE_IT": "1"},
    )
    try:
        serve.wait_for("is ready")
        output = serve.output()
    finally:
        serve.interrupt()
    assert (
        "KILNBASE_DB_POL_MAX is not a Kilnbase setting and is ignored. Did you mean KILNBASE_DB_POOL_MAX?"
        in (output)
    )
    assert "KILNBASE_NOTHING_LIKE_IT is not a Kilnbase setting" in output
    assert "KILNBASE_LOG_LEVEL is not" not in output  # (a real setting)
