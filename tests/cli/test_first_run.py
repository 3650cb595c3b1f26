"""The first run, as a new user meets it: `make run ARGS=...` passes its arguments on, the startup hint
prints a `keys` command that works from where `make run` was typed, `keys` shows the root admin's password,
and `keys` for a data dir that holds no keys says so and creates nothing."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.postgres import reachable_scratch
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def kilnbase(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kilnbase", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with reachable_scratch("kbcli-") as parent:
        yield parent


class MadeServer:
    def __init__(self, port: int, data_dir: Path, log: Path) -> None:
        self.port, self.data_dir, self.log = port, data_dir, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def made(scratch: Path) -> Iterator[MadeServer]:
    """`make run ARGS="--port P --data-dir D"` from the checkout, as a user types it (the venv's install
    stamp is taken as it is: `make test` made it, and reinstalling is not what is under test)."""
    port, data_dir, log = free_port(), scratch / "made", scratch / "make-run.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KILNBASE_", "DATABASE_URL", "PORT"))}
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                "make",
                "--no-print-directory",
                "-o",
                ".venv/.installed",
                "run",
                f"ARGS=--port {port} --data-dir {data_dir}",
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            start_new_session=True,
        )
    server = MadeServer(port, data_dir, log)
    try:
        deadline = time.monotonic() + 90
        # The announcement's last line, not its first ("is ready"): its lines are printed one by one, and a
        # test that read the log as soon as the first was there could find the rest not yet written.
        while "  Keys:" not in server.output():
            assert process.poll() is None, f"make run exited with {process.returncode}:\n{server.output()}"
            assert time.monotonic() < deadline, f"make run was not ready in time:\n{server.output()}"
            time.sleep(0.05)
        yield server
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_make_run_passes_args_to_serve(made: MadeServer) -> None:
    assert httpx.get(f"{made.url}/api/health", timeout=5).status_code == 200
    assert (made.data_dir / "keys.json").is_file()


def test_the_startup_hint_is_a_keys_command_that_works_and_shows_the_root_admin(made: MadeServer) -> None:
    hint = next(line for line in made.output().splitlines() if "Keys:" in line)
    command = hint.split("with: ", 1)[1].rstrip(")").strip()
    assert command.split()[0] in ("kilnbase", ".venv/bin/kilnbase"), command
    printed = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert printed.returncode == 0, printed.stderr
    keys = json.loads(printed.stdout)
    assert keys["apiKey"].startswith("ik_")
    root = keys["rootAdmin"]
    signed_in = httpx.post(
        f"{made.url}/api/auth/admin/sessions?client_type=mobile",
        json={"username": root["username"], "password": root["password"]},
        timeout=10,
    )
    assert signed_in.status_code == 200, signed_in.text


def test_keys_for_a_data_dir_without_keys_fails_and_creates_nothing(scratch: Path) -> None:
    typo = scratch / "no-such-project"
    result = kilnbase("keys", "--data-dir", str(typo))
    assert result.returncode != 0
    assert f"No keys exist in {typo}" in result.stderr
    assert "serve --data-dir" in result.stderr
    assert result.stdout == ""
    assert not typo.exists()
    empty = scratch / "empty"
    empty.mkdir()
    assert kilnbase("keys", "--data-dir", str(empty)).returncode != 0
    assert list(empty.iterdir()) == []


def _serve_never_made(scratch: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`kilnbase serve` on a data dir that does not exist yet, with exactly `env`."""
    return subprocess.run(
        [sys.executable, "-m", "kilnbase", "serve", "--data-dir", str(scratch / "never-made")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        ({"KILNBASE_PORT": "seventy"}, "KILNBASE_PORT: Input should be a valid integer"),
        (
            {"KILNBASE_AUTH_ARGON2_PARALLELISM": "8", "KILNBASE_AUTH_ARGON2_MEMORY_COST_KIB": "16"},
            "KILNBASE_AUTH_ARGON2_MEMORY_COST_KIB must be at least 8 x KILNBASE_AUTH_ARGON2_PARALLELISM (64)",
        ),
    ],
)
def test_a_bad_setting_is_named_plainly_not_a_traceback(
    scratch: Path, environment: dict[str, str], named: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILNBASE_")} | environment
    result = _serve_never_made(scratch, env)
    assert result.returncode == 1
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert not (scratch / "never-made").exists()  # refused before anything was started or created


def test_keys_prints_the_url_the_server_was_started_on(made: MadeServer) -> None:
    # `make run ARGS="--port P"`: the URL that `keys` prints (and README's KB_URL reads) is that server's.
    printed = kilnbase("keys", "--data-dir", str(made.data_dir))
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout)["url"] == made.url


def test_a_bad_setting_is_named_as_the_user_set_it(scratch: Path) -> None:
    # InsForge's name (PORT) set wrong is reported as PORT, not as Kilnbase's other name for it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILNBASE_")} | {"PORT": "seventy"}
    result = _serve_never_made(scratch, env)
    assert result.returncode == 1
    assert "\n  PORT: Input should be a valid integer" in result.stderr
