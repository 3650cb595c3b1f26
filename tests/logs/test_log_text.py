"""The request log's COPY lines and the database log's entries, without a database."""

from __future__ import annotations

from pathlib import Path

from kilnbase.logs.request_log import _PATH_CHARS, copy_text
from kilnbase.logs.sources import LogQuery, clean, postgres_file_lines


def test_copy_lines_escape_what_copy_reads_specially() -> None:
    fields = {"method": "GET", "path": "/a\tb\nc\\d", "status": 200, "duration_ms": 1.5, "role": "anon"}
    other = dict(fields, status=404, duration_ms=0.25, role="anon\r")
    text = copy_text([(1_796_000_000.25, fields), (1_796_000_001.5, other), (1_796_000_001.75, fields)])
    assert text.splitlines(keepends=True) == [
        "2026-11-30 00:53:20.250000+00\tGET\t/a\\tb\\nc\\\\d\t200\t1.5\tanon\n",
        "2026-11-30 00:53:21.500000+00\tGET\t/a\\tb\\nc\\\\d\t404\t0.25\tanon\\r\n",
        "2026-11-30 00:53:21.750000+00\tGET\t/a\\tb\\nc\\\\d\t200\t1.5\tanon\n",
    ]


def test_a_long_path_is_cut_before_it_is_escaped() -> None:
    path = "/" + "x" * (_PATH_CHARS - 2) + "\t" + "y" * 100  # the cut falls right after the tab
    fields = {"method": "GET", "path": path, "status": 200, "duration_ms": 1.0, "role": "anon"}
    (row,) = copy_text([(1_796_000_000.0, fields)]).splitlines()
    assert row.split("\t")[2:] == ["/" + "x" * (_PATH_CHARS - 2) + "\\t", "200", "1.0", "anon"]


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
