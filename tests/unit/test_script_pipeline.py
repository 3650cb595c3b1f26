"""How a restore's script pipeline ends, with real processes in the places of pg_restore and psql: the
closing statements (the live restore's COMMIT) reach the consumer only after a whole script, and whichever
process fails first is the one the result blames."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import IO

from kilnbase.server.script_pipeline import run_script_pipeline

SH = shutil.which("sh") or "/bin/sh"


def _copy(source: IO[bytes], sink: IO[bytes]) -> None:
    while chunk := source.read(65536):
        sink.write(chunk)


def _into(path: Path) -> list[str]:
    """A consumer that keeps all it reads, like psql running every statement."""
    return [SH, "-c", f'cat > "{path}"']


def test_a_whole_script_is_followed_by_the_closing(tmp_path: Path) -> None:
    out = tmp_path / "received"
    result = run_script_pipeline(
        [SH, "-c", "echo one; echo two"], _into(out), {}, _copy, opening=b"BEGIN;\n", closing=b"COMMIT;\n"
    )
    assert out.read_bytes() == b"BEGIN;\none\ntwo\nCOMMIT;\n"
    assert result.written
    assert not result.consumer_failed
    assert not result.producer_failed


def test_a_producer_that_fails_never_gets_the_closing_sent(tmp_path: Path) -> None:
    out = tmp_path / "received"
    result = run_script_pipeline(
        [SH, "-c", "echo half; echo 'archive damaged' >&2; exit 3"],
        [SH, "-c", f'cat > "{out}"; echo read-all > "{tmp_path}/finished"'],
        {},
        _copy,
        opening=b"BEGIN;\n",
        closing=b"COMMIT;\n",
    )
    # (Stopped early, the consumer may not even have opened its file.)
    assert b"COMMIT" not in (out.read_bytes() if out.exists() else b"")
    # The consumer was stopped, not left to read to the end of its input (the server rolls back).
    assert not (tmp_path / "finished").exists()
    assert result.producer_failed
    assert result.producer_code == 3
    assert result.producer_errors == "archive damaged"
    assert not result.consumer_failed


def test_a_consumer_that_stops_stops_the_producer_and_is_blamed(tmp_path: Path) -> None:
    # The consumer fails at its first line; the producer would write for ever.
    result = run_script_pipeline(
        [SH, "-c", "while :; do echo 'INSERT ...'; done"],
        [SH, "-c", "head -c 1 > /dev/null; echo 'syntax error at line 1' >&2; exit 1"],
        {},
        _copy,
        closing=b"COMMIT;\n",
    )
    assert result.consumer_failed
    assert result.consumer_errors == "syntax error at line 1"
    assert result.producer_stopped
    assert not result.producer_failed
    assert not result.written


def test_a_consumer_that_fails_after_reading_everything_is_blamed(tmp_path: Path) -> None:
    result = run_script_pipeline(
        [SH, "-c", "echo one"],
        [SH, "-c", "cat > /dev/null; echo 'COMMIT failed' >&2; exit 2"],
        {},
        _copy,
        closing=b"COMMIT;\n",
    )
    assert result.written
    assert result.consumer_failed
    assert result.consumer_code == 2
    assert not result.producer_failed
