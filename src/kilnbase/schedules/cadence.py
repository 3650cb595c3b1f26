"""When a schedule runs: a 5-field cron expression, or pg_cron's sub-minute form "N seconds" (1 to 59).

The two forms InsForge accepts, with its rules: the interval form is only for sub-minute cadence (a minute or
more is a cron expression, which fires on minute boundaries where an interval drifts from the last run), and
a cron expression has exactly five fields (pg_cron has no seconds field). Cron expressions are parsed and
stepped by `cronsim` (a small, typed, strict parser with Debian cron's semantics: day-of-month and
day-of-week are OR-ed when both are restricted), in UTC as pg_cron runs them; cronsim would also take a
sixth, seconds, field, which is refused here before it sees the expression.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cronsim import CronSim, CronSimError

from kilnbase.http.errors import ApiError

#: The longest expression accepted (a cron line of lists and ranges stays far below it).
MAX_CRON_LENGTH = 100
_INTERVAL = re.compile(r"^\s*(\d+)\s+seconds?\s*$", re.IGNORECASE | re.ASCII)
_CRON_HELP = (
    'Use a 5-field cron expression (minute hour day-of-month month day-of-week, e.g. "*/5 * * * *") or a '
    'sub-minute interval from "1 second" to "59 seconds".'
)
#: InsForge's message for a value of neither form.
SHAPE_MESSAGE = (
    'Invalid cron schedule. Use 5-field cron (e.g., "*/5 * * * *") or sub-minute interval form '
    '(1-59 seconds, e.g., "30 seconds").'
)


def _invalid(message: str) -> ApiError:
    return ApiError(400, "SCHEDULE_INVALID_CRON", message, _CRON_HELP)


@dataclass(frozen=True)
class Cadence:
    """A parsed `cronSchedule`: `every_seconds` for the interval form, else the cron `expression`."""

    text: str
    every_seconds: int | None = None
    expression: str | None = None

    def next_after(self, moment: datetime) -> datetime:
        """The first run strictly after `moment` (an aware datetime), in UTC: cron fields are read in UTC
        whatever the database session's time zone."""
        moment = moment.astimezone(UTC)
        if self.every_seconds is not None:
            return moment + timedelta(seconds=self.every_seconds)
        assert self.expression is not None
        return next(CronSim(self.expression, moment))


def well_formed(text: str) -> bool:
    """Whether `text` has either form's shape (InsForge's request schema): the interval form, or five
    fields. What the fields hold is `parse`'s to check."""
    return bool(_INTERVAL.match(text)) or len(text.split()) == 5


def parse(text: str) -> Cadence:
    """The cadence `text` describes, or 400 `SCHEDULE_INVALID_CRON` naming what is wrong with it."""
    if len(text) > MAX_CRON_LENGTH:
        raise _invalid(f"A cron schedule is at most {MAX_CRON_LENGTH} characters.")
    interval = _INTERVAL.match(text)
    if interval:
        seconds = int(interval.group(1))
        if not 1 <= seconds <= 59:
            raise _invalid(
                'Interval form is only for sub-minute cadence. Use 1-59 seconds (e.g., "30 seconds"); for '
                '1 minute or more use 5-field cron (e.g., "*/5 * * * *").'
            )
        return Cadence(text, every_seconds=seconds)
    fields = text.split()
    if len(fields) != 5:
        raise _invalid(
            "Cron expression must be exactly 5 fields (minute, hour, day, month, day-of-week) or a "
            f'sub-minute interval like "30 seconds". Got {len(fields)} fields. Examples: "*/5 * * * *" '
            'for every 5 minutes, "30 seconds" for every 30 seconds.'
        )
    expression = " ".join(fields)
    try:
        # Constructing parses the fields; the first step finds a date that exists (not "0 0 31 2 *").
        next(CronSim(expression, datetime(2000, 1, 1).astimezone()))
    except (CronSimError, ValueError, StopIteration) as exc:
        reason = str(exc) or "it never matches a date"
        raise _invalid(f"Invalid cron expression: {reason}") from None
    return Cadence(text, expression=expression)
