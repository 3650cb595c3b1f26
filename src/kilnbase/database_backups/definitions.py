"""The requests of `/api/database/backups` as InsForge's shared schemas define them (names of at most 64
characters, a config patch of at least one field), and its rules for a backup schedule: a 5-field cron
expression, read in UTC, that fires at most once an hour (its minute field is one number)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cronsim import CronSim, CronSimError

from kilnbase.http.errors import ApiError

MAX_NAME = 64
MAX_CRON = 64
MAX_RETENTION_DAYS = 3650
_NAME_HELP = "Send a name of 1 to 64 characters (or none)."
_CONFIG_HELP = (
    'Send any of enabled (boolean), cronSchedule (5-field cron in UTC, e.g. "0 3 * * *"), retentionDays '
    f"(1 to {MAX_RETENTION_DAYS}, or null to keep scheduled backups forever)."
)


def invalid(message: str, next_actions: str) -> ApiError:
    return ApiError(400, "INVALID_INPUT", message, next_actions)


def backup_id(text: str) -> str:
    """A backup id is a UUID; anything else is InsForge's 400 'Invalid backup ID' (never a 500)."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise invalid("Invalid backup ID", "Take the id from GET /api/database/backups.") from None


def name_of(body: dict[str, Any], *, nullable: bool) -> str | None:
    """The `name` of a create (optional) or rename (required, null clears it) body, trimmed."""
    if "name" not in body:
        if nullable:
            raise invalid("name: Required", _NAME_HELP)
        return None
    value = body["name"]
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise invalid("name: Expected string", _NAME_HELP)
    name = value.strip()
    if not name:
        raise invalid("name: Backup name cannot be empty", _NAME_HELP)
    if len(name) > MAX_NAME:
        raise invalid("name: Backup name must be less than 64 characters", _NAME_HELP)
    return name


@dataclass(frozen=True)
class ConfigPatch:
    enabled: bool | None = None
    cron_schedule: str | None = None
    #: Whether retentionDays was given (null is a value: keep scheduled backups forever).
    retention_given: bool = False
    retention_days: int | None = None


def config_patch(body: dict[str, Any]) -> ConfigPatch:
    problems: list[str] = []
    enabled = body.get("enabled")
    if "enabled" in body and not isinstance(enabled, bool):
        problems.append("enabled: Expected boolean")
    cron = body.get("cronSchedule")
    if "cronSchedule" in body:
        if not isinstance(cron, str):
            problems.append("cronSchedule: Expected string")
        elif not cron.strip():
            problems.append("cronSchedule: Cron schedule cannot be empty")
        elif len(cron.strip()) > MAX_CRON:
            problems.append("cronSchedule: Cron schedule must be less than 64 characters")
    days = body.get("retentionDays")
    if "retentionDays" in body and days is not None:
        if isinstance(days, bool) or not isinstance(days, int):
            problems.append("retentionDays: Expected integer")
        elif days <= 0:
            problems.append("retentionDays: Number must be greater than 0")
        elif days > MAX_RETENTION_DAYS:
            problems.append("retentionDays: Retention must be 3650 days (10 years) or less")
    if problems:
        raise invalid(", ".join(problems), _CONFIG_HELP)
    if not {"enabled", "cronSchedule", "retentionDays"} & body.keys():
        raise invalid("At least one field must be provided", _CONFIG_HELP)
    schedule = cron.strip() if isinstance(cron, str) else None
    if schedule is not None:
        check_cron(schedule)
    return ConfigPatch(enabled, schedule, "retentionDays" in body, days)


def check_cron(text: str) -> None:
    """InsForge's three checks, with its messages: five fields, one minute, a valid expression."""
    fields = text.split()
    if len(fields) != 5:
        raise invalid(
            "cronSchedule must be a standard 5-field cron expression (minute, hour, day of month, month, "
            "day of week).",
            _CONFIG_HELP,
        )
    if not fields[0].isdigit():
        raise invalid(
            "Scheduled backups can run at most once per hour: the minute field must be a single value "
            '(e.g. "30 2 * * *").',
            _CONFIG_HELP,
        )
    try:
        next(CronSim(" ".join(fields), datetime(2000, 1, 1, tzinfo=UTC)))
    except (CronSimError, ValueError, StopIteration):
        raise invalid("cronSchedule is not a valid cron expression.", _CONFIG_HELP) from None


def fires_in_a_week(enabled: bool, cron: str, after: datetime) -> int:
    """How many backups the schedule makes in the week after `after` (none while it is off). A valid
    schedule fires at most once an hour, so this reads at most 169 fires."""
    if not enabled:
        return 0
    end = after + timedelta(days=7)
    fires = 0
    for moment in CronSim(" ".join(cron.split()), after.astimezone(UTC)):
        if moment > end:
            break
        fires += 1
    return fires


def next_fire(cron: str, after: datetime) -> datetime:
    """The first fire of `cron` strictly after `after`, in UTC."""
    return next(CronSim(" ".join(cron.split()), after.astimezone(UTC)))
