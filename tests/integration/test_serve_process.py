"""`kilnbase serve` as a user runs it: first start, restart, a killed server, root, external Postgres 15."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.support.postgres import reachable_scratch
from tests.support.servers import ServerProcess, free_port

EXTERNAL = make_conninfo(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3)


def embedded_conninfo(data_dir: Path) -> str:
    """Connect to a running server's embedded cluster as an operator would (port, socket: pid file)."""
    lines = (data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()
    password = json.loads((data_dir / "keys.json").read_text())["postgres_password"]
    return make_conninfo(host=lines[4], port=lines[3], user="postgres", password=password, dbname="kilnbase")


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and str(data_dir / "pgdata") in cmdline:
            found.append(proc)
    return found


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def kilnbase(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kilnbase", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with reachable_scratch("kbserve-") as parent:
        path = parent / "data"
        yield path
        for proc in postgres_processes(path):  # never leave a cluster behind, whatever the test did
            proc.kill()


def test_first_start_then_restart_keeps_data_and_keys(data_dir: Path) -> None:
    server = ServerProcess(data_dir)
    server.start()
    jwks = httpx.get(server.url + "/.well-known/jwks.json").json()
    keys_before = (data_dir / "keys.json").read_text()
    with psycopg.connect(embedded_conninfo(data_dir)) as conn:
        conn.execute("create table public.kept (v text)")
        conn.execute("insert into public.kept values ('survives a restart')")
        assert conn.execute("show wal_level").fetchone() == ("logical",)
        conn.execute("create extension if not exists vector")
        port = int(conn.execute("show port").fetchone()[0])  # type: ignore[index]
    assert port != 5432
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status still says what stopped it.
    assert server.stop() in (0, -signal.SIGTERM)
    assert "Stopping PostgreSQL" in server.output()
    assert postgres_processes(data_dir) == []

    server.start()
    with psycopg.connect(embedded_conninfo(data_dir)) as conn:
        assert conn.execute("select v from public.kept").fetchall() == [("survives a restart",)]
    assert (data_dir / "keys.json").read_text() == keys_before
    assert httpx.get(server.url + "/.well-known/jwks.json").json() == jwks
    server.stop()


def test_an_idle_server_dates_its_answers_and_stops_on_sigterm(data_dir: Path) -> None:
    """With no connection open the server sleeps (no ticks): a new connection still gets the `Date` of its
    second, and SIGTERM still stops it (the signal wakes it)."""
    server = ServerProcess(data_dir)
    server.start()
    time.sleep(1.5)
    before = time.time()
    date = httpx.get(server.url + "/api/health").headers["date"]
    assert parsedate_to_datetime(date).timestamp() >= int(before)
    time.sleep(1.5)
    assert server.stop(timeout=15) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.output()


def test_workers_mode_serves_from_several_processes_and_stops_cleanly(data_dir: Path) -> None:
    server = ServerProcess(data_dir, args=["--workers", "2"])
    server.start()
    assert server.process is not None
    workers = [
        p for p in psutil.Process(server.process.pid).children() if "kilnbase" in " ".join(p.cmdline())
    ]
    assert len(workers) == 2
    for _ in range(20):
        assert httpx.get(server.url + "/api/health").json()["checks"]["database"]["status"] == "ok"
    # It says it is ready once both workers' apps have started, not when granian has started their
    # processes (seconds earlier).
    deadline = time.monotonic() + 60
    while "is ready at" not in server.output():
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.1)
    output = server.output()
    started = [found.start() for found in re.finditer(r"API worker \d+ has started", output)]
    assert len(started) == 2 and max(started) < output.index("is ready at"), output
    assert "with 2 workers" in output
    assert server.stop() in (0, -signal.SIGTERM)
    assert "Stopping PostgreSQL" in server.output()
    assert postgres_processes(data_dir) == []
    assert not any(alive(worker.pid) for worker in workers)


def test_a_killed_server_is_recovered_on_the_next_start(data_dir: Path) -> None:
    server = ServerProcess(data_dir)
    server.start()
    with psycopg.connect(embedded_conninfo(data_dir)) as conn:
        conn.execute("create table public.before_kill (id int)")
    orphan_pid = int((data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[0])
    server.stop(signal.SIGKILL)
    assert alive(orphan_pid), "the postmaster outlives a SIGKILLed server"

    server.start()
    assert "left running by an earlier, killed run" in server.output()
    assert not alive(orphan_pid)
    with psycopg.connect(embedded_conninfo(data_dir)) as conn:
        assert conn.execute("select to_regclass('public.before_kill')::text").fetchone() == ("before_kill",)
    server.stop()


def _wait_for_status(url: str, status: int, headers: dict[str, str], seconds: float = 60) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while True:
        try:
            answer = httpx.get(url, headers=headers, timeout=10)
            if answer.status_code == status:
                return answer
            assert answer.status_code == 503, answer.text  # (while it is down: never a 500 or a hang)
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"no {status} from {url} in time"
        time.sleep(0.05)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_postgres_that_dies_under_a_running_server_is_started_again(data_dir: Path, workers: str) -> None:
    server = ServerProcess(data_dir, args=["--workers", workers])
    server.start()
    with psycopg.connect(embedded_conninfo(data_dir)) as conn:
        conn.execute("create table public.survivor (id int); insert into public.survivor values (1)")
        conn.execute("grant select on public.survivor to project_admin")
    admin = {"Authorization": f"Bearer {json.loads((data_dir / 'keys.json').read_text())['api_key']}"}
    pid = int((data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[0])
    os.kill(pid, signal.SIGKILL)
    rows = _wait_for_status(server.url + "/api/database/records/survivor", 200, admin)
    assert rows.json() == [{"id": 1}]
    # (Each worker finds its own dead connections: the one answering health may not have served yet.)
    assert _wait_for_status(server.url + "/api/health", 200, {}).json()["status"] == "ok"
    assert "PostgreSQL exited unexpectedly" in server.output()
    assert server.stop() in (0, -signal.SIGTERM)
    assert not postgres_processes(data_dir)


def test_a_stale_pid_file_from_a_crashed_cluster_is_removed(data_dir: Path) -> None:
    server = ServerProcess(data_dir)
    server.start()
    server.stop(signal.SIGKILL)
    for proc in postgres_processes(data_dir):
        proc.kill()
    psutil.wait_procs(postgres_processes(data_dir), timeout=10)
    assert (data_dir / "pgdata" / "postmaster.pid").exists()
    server.start()
    assert httpx.get(server.url + "/api/health").json()["status"] == "ok"
    server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="checks what happens when Kilnbase runs as root")
def test_as_root_postgres_runs_unprivileged(data_dir: Path) -> None:
    server = ServerProcess(data_dir)
    server.start()
    owners = {proc.username() for proc in postgres_processes(data_dir)}
    assert owners == {"nobody"}
    assert (data_dir / "keys.json").stat().st_uid == 0
    assert (data_dir / "keys.json").stat().st_mode & 0o777 == 0o600
    server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to another user")
def test_as_root_an_unreachable_data_dir_is_explained(data_dir: Path) -> None:
    private = data_dir.parent / "private"
    private.mkdir(mode=0o700)
    result = kilnbase("serve", "--data-dir", str(private / "data"), "--port", str(free_port()))
    assert result.returncode == 1
    assert "cannot enter" in result.stderr and "--data-dir" in result.stderr


def test_a_second_server_on_the_same_data_dir_is_refused(data_dir: Path) -> None:
    server = ServerProcess(data_dir)
    server.start()
    result = kilnbase("serve", "--data-dir", str(data_dir), "--port", str(free_port()))
    assert result.returncode != 0
    assert "Another Kilnbase server is using" in result.stderr + result.stdout
    assert httpx.get(server.url + "/api/health").status_code == 200
    server.stop()


def test_a_busy_port_is_explained_before_anything_starts(data_dir: Path) -> None:
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = kilnbase("serve", "--data-dir", str(data_dir), "--port", str(port))
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and "--port" in result.stderr
    assert not (data_dir / "pgdata").exists()


def test_keys_and_migrate_commands(data_dir: Path) -> None:
    first = kilnbase("db", "migrate", "--data-dir", str(data_dir))
    assert first.returncode == 0 and "0001_roles_and_auth_helpers" in first.stderr
    keys = json.loads(kilnbase("keys", "--data-dir", str(data_dir)).stdout)
    assert keys["apiKey"].startswith("ik_") and keys["anonKey"].startswith("anon_")
    assert keys["url"] == "http://127.0.0.1:7130"
    assert json.loads(kilnbase("keys", "--data-dir", str(data_dir), env={"PORT": "8123"}).stdout) == {
        **keys,
        "url": "http://127.0.0.1:8123",
    }
    second = kilnbase("db", "migrate", "--data-dir", str(data_dir))
    assert second.returncode == 0 and "up to date" in second.stderr
    assert postgres_processes(data_dir) == []


def test_migrate_beside_a_running_server_refuses_and_leaves_it_running(data_dir: Path) -> None:
    server = ServerProcess(data_dir)
    server.start()
    postmaster = {proc.pid for proc in postgres_processes(data_dir)}
    result = kilnbase("db", "migrate", "--data-dir", str(data_dir))
    assert result.returncode == 1
    assert "Another Kilnbase server is using" in result.stderr
    assert {proc.pid for proc in postgres_processes(data_dir)} == postmaster
    assert httpx.get(server.url + "/api/health").status_code == 200
    assert server.stop() in (0, -signal.SIGTERM)


def test_keys_prints_the_current_keys_after_a_rotation(data_dir: Path) -> None:
    server = ServerProcess(data_dir)
    server.start()
    original = json.loads(kilnbase("keys", "--data-dir", str(data_dir)).stdout)
    rotated = httpx.post(
        server.url + "/api/secrets/api-key/rotate",
        headers={"x-api-key": original["apiKey"]},
        json={"gracePeriodHours": 0},
    ).json()["apiKey"]
    while_running = json.loads(kilnbase("keys", "--data-dir", str(data_dir)).stdout)
    assert while_running == {**original, "apiKey": rotated}
    server.stop()
    stopped = kilnbase("keys", "--data-dir", str(data_dir))
    assert json.loads(stopped.stdout) == while_running, stopped.stderr
    assert postgres_processes(data_dir) == []


def _external_available() -> bool:
    try:
        with psycopg.connect(EXTERNAL):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture
def external_database() -> Iterator[str]:
    if not _external_available():
        pytest.skip("no Postgres at 127.0.0.1:5432")
    name = f"kilnbase_test_{secrets.token_hex(4)}"
    with psycopg.connect(EXTERNAL, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    yield make_conninfo(EXTERNAL, dbname=name)
    with psycopg.connect(EXTERNAL, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.mark.external_postgres
def test_database_url_uses_the_external_postgres_15(data_dir: Path, external_database: str) -> None:
    server = ServerProcess(data_dir, env={"DATABASE_URL": external_database})
    server.start()
    assert not (data_dir / "pgdata").exists(), "no embedded cluster when DATABASE_URL is set"
    with psycopg.connect(external_database) as conn:
        assert conn.info.server_version >= 150000
        conn.execute("create table public.ext_probe (id int)")
        conn.commit()
        conn.execute("set role anon")
        assert conn.execute("select count(*) from public.ext_probe").fetchone() == (0,)
        conn.rollback()
        rls = conn.execute("select relrowsecurity from pg_class where oid = 'public.ext_probe'::regclass")
        assert rls.fetchone() == (True,)
    server.stop()
    server.start()  # a restart applies nothing twice
    with psycopg.connect(external_database) as conn:
        versions = [r[0] for r in conn.execute("select version from system.migrations order by 1")]
    assert versions == sorted(set(versions))
    server.stop()


@pytest.mark.external_postgres
def test_a_database_url_that_cannot_connect_is_explained(data_dir: Path) -> None:
    bad = make_conninfo(host="127.0.0.1", port=free_port(), user="postgres", dbname="x", connect_timeout=2)
    result = kilnbase(
        "serve", "--data-dir", str(data_dir), "--port", str(free_port()), env={"DATABASE_URL": bad}
    )
    assert result.returncode == 1
    assert "Cannot connect to DATABASE_URL" in result.stderr
