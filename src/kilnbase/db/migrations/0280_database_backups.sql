-- Database backups over the API (InsForge's `/api/database/backups`): one row per backup file, and the
-- schedule of the scheduled ones. The files are Kilnbase backups (`server/backup.py`, the format
-- `kilnbase db restore` reads), kept in the data dir's `backups` folder, never under the storage API.
--
-- An in-place restore (`server/live_backups.py`) leaves both tables as they are: restoring an old backup
-- must neither bring back backups deleted since nor lose newer ones whose files exist, nor undo the schedule.
-- Neither table has a trigger or a foreign key, so nothing of theirs depends on what a restore drops.
CREATE TABLE system.database_backups (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text CHECK (length(name) BETWEEN 1 AND 64),
    trigger_source text NOT NULL DEFAULT 'manual' CHECK (trigger_source IN ('manual', 'scheduled')),
    status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed')),
    -- The file's name in the backups folder (set when it is complete).
    storage_key text,
    size_bytes bigint,
    error_message text,
    created_by text,
    completed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX database_backups_name ON system.database_backups (name) WHERE name IS NOT NULL;
-- Retention reads the scheduled backups by age.
CREATE INDEX database_backups_source_created ON system.database_backups (trigger_source, created_at);

-- The schedule: one row. `backup_next_at` is the next cron fire the scheduler claims (NULL while off); a
-- server process claims it with FOR UPDATE SKIP LOCKED and moves it on, so each fire is taken once.
CREATE TABLE system.database_config (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    backup_enabled boolean NOT NULL DEFAULT false,
    backup_cron_schedule text NOT NULL DEFAULT '0 0 * * *',
    backup_retention_days integer DEFAULT 7 CHECK (backup_retention_days IS NULL OR backup_retention_days > 0),
    backup_next_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO system.database_config DEFAULT VALUES;
