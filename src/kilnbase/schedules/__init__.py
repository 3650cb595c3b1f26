"""Schedules (InsForge's `/api/schedules`): HTTP calls on a cron expression, with a log of each run."""
