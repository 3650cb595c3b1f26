"""The machine's Redis, for tests that share it (each under keys of its own), and a private redis-server on a
free loopback port, for tests that stop it or must not share the machine's."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import redis

from tests.support.servers import free_port

#: The machine's Redis.
MACHINE_REDIS_URL = "redis://127.0.0.1:6379/0"


def machine_redis_or_skip() -> redis.Redis:
    """A client of the machine's Redis; the test is skipped when none answers."""
    client = redis.Redis.from_url(MACHINE_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {MACHINE_REDIS_URL} (apt-get install redis-server)")
    return client


class RedisServer:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.url = f"redis://127.0.0.1:{free_port()}/0"
        port = self.url.rsplit(":", 1)[1].split("/")[0]
        self._command = [binary, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self._process = subprocess.Popen(self._command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None
