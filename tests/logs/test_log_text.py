"""The request log's COPY lines and the database log's entries, without a database."""

from __future__ import annotations

from pathlib import Path

from kilnbase.logs.request_log import _copy_line
from kilnbase.logs.sources import LogQuery, clean, postgres_file_lines


def test_copy_lines_escape_what_copy_reads_specially() -> None:
    fields = {"method": "GET", "path": "/a\tb\nc\\d", "status": 200, "duration_ms": 1.5, "role": "anon"}
    line = _copy_line(1_796_000_000.25, fields, {})
    assert line == "2026-11-30 00:53:20.250000+00\tGET\t/a\\tb\\nc\\\\d\t200\t1.5\tanon\n"


def test_database_log_entries_keep_their_continuation_lines(tmp_path: Path) -> None:
    log = tmp_path / "postgres.log"
    log.write_text(
        "2026-12-04 10:00:00.000 UTC [1] ERROR:  syntax error\n"
        "\tcontinued detail\n"
        "2026-12-04 10:00:01.000 UTC [1] LOG:  checkpoint complete\n"
    )
    lines = postgres_file_lines(log, LogQuery(limit=10))
    assert [line["eventMessage"] for line in lines] == [
        "2026-12-04 10:00:00.000 UTC [1] ERROR:  syntax error\n\tcontinued detail",
        "2026-12-04 10:00:01.000 UTC [1] LOG:  checkpoint complete",
    ]
    assert postgres_file_lines(log, LogQuery(limit=1))[0]["eventMessage"].endswith("checkpoint complete")


def test_clean_removes_keys_and_sql_passwords() -> None:
    key = "ik_" + "a" * 64
    assert key not in clean(f"GET /x/{key}")
    assert clean("alter role x password 'it''s secret'") == "alter role x password [redacted]"
    assert clean("password authentication failed") == "password authentication failed"
