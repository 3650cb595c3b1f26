"""A schedule's cadence without a database: InsForge's two forms, the next run of each, the problems named;
and where a `functionUrl` that is a path on this server goes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from kilnbase.http.errors import ApiError
from kilnbase.schedules import cadence
from kilnbase.schedules.definitions import secret_keys
from kilnbase.schedules.runner import target_url

MOMENT = datetime(2026, 3, 2, 9, 7, 30, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*/5 * * * *", datetime(2026, 3, 2, 9, 10, tzinfo=UTC)),
        ("0 9 * * 1-5", datetime(2026, 3, 3, 9, 0, tzinfo=UTC)),
        ("  30   6 1 * *  ", datetime(2026, 4, 1, 6, 30, tzinfo=UTC)),
        ("0 0 L * *", datetime(2026, 3, 31, 0, 0, tzinfo=UTC)),
        ("30 seconds", datetime(2026, 3, 2, 9, 8, 0, tzinfo=UTC)),
        ("1 second", datetime(2026, 3, 2, 9, 7, 31, tzinfo=UTC)),
        ("59 SECONDS", datetime(2026, 3, 2, 9, 8, 29, tzinfo=UTC)),
    ],
)
def test_next_run(text: str, expected: datetime) -> None:
    assert cadence.well_formed(text)
    assert cadence.parse(text).next_after(MOMENT) == expected


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("60 seconds", "Use 1-59 seconds"),
        ("0 seconds", "Use 1-59 seconds"),
        ("5 minutes", "exactly 5 fields"),
        ("0 * * * * *", "Got 6 fields"),
        ("61 * * * *", "Bad minute"),
        ("* 24 * * *", "Bad hour"),
        ("0 0 31 2 *", "Bad day-of-month"),
        ("0 0 * 13 *", "Bad month"),
        ("0 0 * * 8", "Bad day-of-week"),
        ("*" + " *" * 60, "at most 100 characters"),
    ],
)
def test_problems_are_named(text: str, named: str) -> None:
    with pytest.raises(ApiError) as refused:
        cadence.parse(text)
    assert refused.value.status == 400 and refused.value.code == "SCHEDULE_INVALID_CRON"
    assert named in refused.value.message


def test_shapes_insforge_refuses_before_parsing() -> None:
    assert not cadence.well_formed("every minute")
    assert not cadence.well_formed("* * * * * *")
    assert cadence.well_formed("61 * * * *")  # (five fields: parse names the bad one)
    # InsForge's pattern reads ASCII digits only (JavaScript's \d): Arabic-Indic thirty is not an interval.
    assert cadence.well_formed("30 seconds") and not cadence.well_formed("\u0663\u0660 seconds")


def test_secret_placeholders() -> None:
    headers = {"A": "Bearer ${{secrets.ONE}} and ${{secrets.TWO}}", "B": "${{secrets.ONE}}", "C": "${{ x }}"}
    assert secret_keys(headers) == ["ONE", "TWO"]


def test_a_path_is_called_on_this_server() -> None:
    base = "http://127.0.0.1:7130"
    assert target_url("/functions/report", base) == "http://127.0.0.1:7130/functions/report"
    assert target_url("/functions/report?x=1", base) == "http://127.0.0.1:7130/functions/report?x=1"
    assert target_url("https://example.com/f", base) == "https://example.com/f"


def test_cron_is_read_in_utc_whatever_the_moments_zone() -> None:
    paris_morning = datetime(2026, 3, 2, 8, 0, tzinfo=timezone(timedelta(hours=2)))  # 06:00 UTC
    assert cadence.parse("0 9 * * *").next_after(paris_morning) == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
