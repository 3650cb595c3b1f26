"""The filter a restore into PostgreSQL 15 or 16 streams pg_restore's script through: it removes the one
setting those servers refuse from the settings the script opens with, and changes nothing else."""

from __future__ import annotations

import io

from kilnbase.server.restore import _copy_script

# The opening of a script the bundled pg_restore (18.6) wrote for a Kilnbase dump, verbatim.
OPENING = b"""--
-- PostgreSQL database dump
--

\\restrict eEhCwyS8O2hQxwsWvovRiXuZmvJufrEHBFxRm6UxqTRE2RwXY1kpDxvGisdjHNA

-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 18.6

BEGIN;

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET transaction_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

"""

# Further on: a one-column table whose row reads like that setting, which must reach the database as it is.
BODY = b"""--
-- Name: lines; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.lines (line text);

COPY public.lines (line) FROM stdin;
SET transaction_timeout = 0;
\\.

COMMIT;
"""


def copied(script: bytes) -> bytes:
    sink = io.BytesIO()
    _copy_script(io.BufferedReader(io.BytesIO(script)), sink)
    return sink.getvalue()


def test_the_opening_transaction_timeout_is_removed_and_nothing_else() -> None:
    out = copied(OPENING + BODY)
    assert out == (OPENING + BODY).replace(b"SET transaction_timeout = 0;\n", b"", 1)
    assert out.count(b"SET transaction_timeout = 0;\n") == 1  # (the row, further on)
    assert b"SET idle_in_transaction_session_timeout = 0;\nSET client_encoding" in out


def test_a_script_that_does_not_open_as_pg_restore_s_is_copied_whole() -> None:
    for script in (
        b"CREATE TABLE t (x int);\nSET transaction_timeout = 0;\n",
        b"-- a comment\nSET transaction_timeout = '1s';\nSET transaction_timeout = 0 ;\n",
        b"",
        BODY,
    ):
        assert copied(script) == script


def test_a_long_script_is_copied_whole_past_its_opening() -> None:
    rows = b"".join(b"%d\tSET transaction_timeout = 0;\n" % n for n in range(200_000))
    script = OPENING + b"COPY public.t (n, line) FROM stdin;\n" + rows + b"\\.\n"
    assert copied(script) == script.replace(b"SET transaction_timeout = 0;\n", b"", 1)
