"""Where a server's CPU goes under load: py-spy samples of all its processes, grouped into parts by the
function each sample was in.

A benchmark's CPU time per request says how much; this says what for, in the same run, so that a note can
name the parts ("the rest of the time") instead of guessing. py-spy samples from outside the process, so
the server runs unchanged. It sees Python frames only: a sample of a thread with none (granian's HTTP server
is Rust threads) is counted apart, as `native_share`, and the parts share the samples that have one.

py-spy is not among the test dependencies (nothing in the suite needs it): `pip install py-spy==0.4.3`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

#: (part, substrings of a sample's innermost Python frame): the first part with a match takes the sample. A
#: call into native code (a socket write, OpenSSL, uvloop) is counted under the Python line that made it,
#: so the lines that hand over to the HTTP server, to libpq or to the event loop are named here.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "event loop (uvloop's C code: waiting, dispatching)",
        ("(asyncio/runners.py", "(asyncio/base_events.py", "_spawn_asgi_lifespan_worker (granian/"),
    ),
    (
        "HTTP server: parsing, receiving, sending",
        (
            "ServerErrorMiddleware.__call__.<locals>._send (",
            "Request.stream (starlette/requests.py",
            "(uvicorn/",
            "(httptools/",
            "(granian/",
        ),
    ),
    ("ES256 signing (OpenSSL)", ("sign_es256 (",)),
    ("HMAC (refresh tokens, CSRF)", ("(hmac.py", "_hs256 (")),
    (
        "psycopg: sending to Postgres (libpq, the socket)",
        ("_send_query_prepared (psycopg/", "_maybe_prepare_gen (psycopg/"),
    ),
    ("psycopg and its pool: the rest", ("(psycopg/", "(psycopg_pool/")),
    ("asyncio", ("(asyncio/", "(contextlib.py")),
    ("Starlette: the rest", ("(starlette/",)),
    ("Kilnbase: auth, keys, identity", ("(kilnbase/auth/", "(kilnbase/keys/", "(kilnbase/identity/")),
    ("Kilnbase: logging", ("(kilnbase/structured_log.py", "(kilnbase/logs/")),
    ("Kilnbase: the rest", ("(kilnbase/",)),
)
OTHER = "other (stdlib, orjson, ...)"
RATE = 250


class SamplerMissing(RuntimeError):
    """py-spy is not installed."""


@dataclass(frozen=True)
class Profile:
    #: Each part's share of the samples with a Python frame, largest first.
    shares: dict[str, float]
    #: The share of all samples that had no Python frame (native threads).
    native_share: float


def start(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    """py-spy recording `pid` and its child processes for `seconds`, into `output` (raw, collapsed
    stacks); SamplerMissing if py-spy is not installed."""
    beside = Path(sys.executable).parent / "py-spy"  # the venv's, which need not be on PATH
    spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if spy is None:
        raise SamplerMissing("py-spy is missing: `.venv/bin/pip install py-spy==0.4.3`, then run again.")
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--nonblocking",
            "--rate",
            str(RATE),
            "--duration",
            str(max(1, int(seconds))),
            "--format",
            "raw",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def part_of(innermost_frame: str) -> str:
    for part, markers in PARTS:
        if any(marker in innermost_frame for marker in markers):
            return part
    return OTHER


def read(output: Path) -> Profile:
    """The parts of a raw py-spy recording (one `frame;frame;... count` line per distinct stack)."""
    counts: Counter[str] = Counter()
    native = 0
    for line in output.read_text().splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        innermost = stack.rsplit(";", 1)[-1]
        if innermost.startswith("process "):  # (`--subprocesses` puts the process first; nothing after it)
            native += int(count)
        else:
            counts[part_of(innermost)] += int(count)
    python = sum(counts.values())
    shares = {part: round(n / python, 3) for part, n in counts.most_common()} if python else {}
    return Profile(shares, round(native / (python + native), 3) if python + native else 0.0)
