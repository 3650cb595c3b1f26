"""Database backups over the API (InsForge's `/api/database/backups`): backup files the server makes, lists,
renames, deletes and restores in place, on demand or on a cron schedule with retention."""
