"""`kilnbase approvals list`, as a person deciding from the terminal reads it: a held upload shows which file
is meant (its size and SHA-256, not its bytes), and what the agent sent is printed as it was sent."""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import sys
from urllib.parse import quote

import httpx

from tests.mcp_server.test_mcp_server import agent_key
from tests.support.servers import ServerProcess


def test_a_held_upload_is_listed_with_its_files_size_and_hash(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    admin = {"Authorization": f"Bearer {live_keys['apiKey']}"}
    bucket, key = f"cli-{secrets.token_hex(4)}", "docs/[draft]/a.bin"
    bucket_body = {"bucketName": bucket, "isPublic": False}
    made = httpx.post(f"{live_server.url}/api/storage/buckets", headers=admin, json=bucket_body)
    assert made.status_code == 201, made.text
    object_url = f"{live_server.url}/api/storage/buckets/{bucket}/objects/{quote(key)}"
    kept = httpx.put(object_url, headers=admin, files={"file": ("a.bin", b"keep")})
    assert kept.status_code == 200, kept.text
    agent = {"Authorization": f"Bearer {agent_key(live_server, live_keys['apiKey'], ['storage:write'])}"}
    data = secrets.token_bytes(20_000)
    held = httpx.put(object_url, headers=agent, files={"file": ("a.bin", data, "application/pdf")})
    assert held.status_code == 202, held.text

    command = ["approvals", "list", "--data-dir", str(live_server.data_dir), "--url", live_server.url]
    listed = subprocess.run(
        [sys.executable, "-m", "kilnbase", *command],
        capture_output=True,
        text=True,
        env=live_server.env | {"COLUMNS": "80"},
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    lines = listed.stderr.splitlines()
    at = next(i for i, line in enumerate(lines) if held.json()["changeRequestId"] in line)
    assert f'"key": "{key}"' in lines[at + 1], lines[at : at + 3]  # (not read as rich's markup)
    digest = hashlib.sha256(data).hexdigest()
    assert lines[at + 2] == f"    file: 20,000 bytes, sha256 {digest} (from base64Data)", lines[at : at + 3]
