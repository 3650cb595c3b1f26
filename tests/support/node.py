"""The official npm clients (`tests/compat/js/package.json`), installed by the suite itself, and a way to run
a Node script against a live server and read back the JSON it prints on its last line."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

JS_DIR = Path(__file__).resolve().parents[1] / "compat" / "js"


def ensure_npm_clients() -> Path:
    """`npm ci` when node_modules is missing or older than the lock file."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError("Node.js 20 and npm are needed for tests/compat: apt-get install nodejs npm")
    marker = JS_DIR / "node_modules" / ".package-lock.json"
    lock = JS_DIR / "package-lock.json"
    # One installer at a time: parallel test workers share node_modules.
    with (JS_DIR / ".npm-install.lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=JS_DIR,
                check=True,
                timeout=600,
            )
    return JS_DIR


def run_node(script: str, env: Mapping[str, str], timeout: float = 120) -> Any:
    """Run an ES module script (it may import the npm clients); return the JSON of its last stdout line."""
    ensure_npm_clients()
    with tempfile.NamedTemporaryFile("w", suffix=".mjs", dir=JS_DIR, delete=False) as f:
        f.write(script)
        path = Path(f.name)
    try:
        result = subprocess.run(
            ["node", str(path)], capture_output=True, text=True, timeout=timeout, env={**os.environ, **env}
        )
    finally:
        path.unlink(missing_ok=True)
    if result.returncode != 0:
        raise AssertionError(
            f"node exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if not lines:
        raise AssertionError(f"node printed nothing\nstderr:\n{result.stderr}")
    return json.loads(lines[-1])
