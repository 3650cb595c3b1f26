-- Schedules (InsForge's `schedules` schema): HTTP calls made on a cron expression or every N seconds, and
-- the log of each run. InsForge runs them with pg_cron and pgsql-http; Kilnbase's own runner does (one task
-- in each API process, `schedules/runner.py`), which claims each due run here so that it happens once
-- whatever the number of processes. Kilnbase-internal: only the owner reads and writes these tables.
CREATE SCHEMA schedules;
REVOKE ALL ON SCHEMA schedules FROM PUBLIC;

-- InsForge answers with pg_cron's job id (`cronJobId`): a new one each time a job is (re)scheduled, none
-- while it is off. Kilnbase hands out the same kind of number.
CREATE SEQUENCE schedules.cron_job_ids;

CREATE TABLE schedules.jobs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (length(name) BETWEEN 3 AND 255),
    cron_schedule text NOT NULL CHECK (length(cron_schedule) <= 100),
    function_url text NOT NULL CHECK (length(function_url) <= 2048),
    http_method text NOT NULL CHECK (http_method IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')),
    -- The headers as the admin gave them (`${{secrets.KEY}}` placeholders kept), as JSON encrypted with the
    -- project's SecretBox (the job's id bound as associated data); placeholders are resolved at each run.
    headers_ciphertext text,
    body jsonb CHECK (body IS NULL OR jsonb_typeof(body) = 'object'),
    is_active boolean NOT NULL DEFAULT true,
    cron_job_id bigint,
    -- When the next run is due (none while the job is off); a claim moves it on before the run starts.
    next_run_at timestamptz,
    -- While a run is under way, until when it may last: a job never runs twice at once (as in pg_cron),
    -- and a process that died mid-run frees its job when this passes.
    running_until timestamptz,
    last_executed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (NOT is_active OR next_run_at IS NOT NULL)
);
CREATE INDEX jobs_due ON schedules.jobs (next_run_at) WHERE is_active;

CREATE TABLE schedules.job_logs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id uuid NOT NULL REFERENCES schedules.jobs (id) ON DELETE CASCADE,
    executed_at timestamptz NOT NULL DEFAULT now(),
    status_code int NOT NULL,
    success boolean NOT NULL,
    duration_ms bigint NOT NULL,
    message text CHECK (length(message) <= 1000)
);
CREATE INDEX job_logs_job_executed_at ON schedules.job_logs (job_id, executed_at DESC);
CREATE INDEX job_logs_executed_at ON schedules.job_logs (executed_at);

-- One row: how long job logs are kept (null: for ever), 7 days unless configured, as in InsForge.
CREATE TABLE schedules.config (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    retention_days int DEFAULT 7 CHECK (retention_days IS NULL OR retention_days BETWEEN 1 AND 3650),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO schedules.config DEFAULT VALUES;

REVOKE ALL ON ALL TABLES IN SCHEMA schedules FROM PUBLIC;
REVOKE ALL ON SEQUENCE schedules.cron_job_ids FROM PUBLIC;

-- Every process's runner sleeps until the soonest due run; it is woken when a run becomes due sooner than
-- it was (a new job, a job switched on, a new cadence). A claim only moves a run later: no wake-up.
CREATE FUNCTION schedules.notify_sooner() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kilnbase_schedules', NEW.id::text);
    RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION schedules.notify_sooner() FROM PUBLIC;
CREATE TRIGGER jobs_inserted AFTER INSERT ON schedules.jobs
    FOR EACH ROW WHEN (NEW.is_active) EXECUTE FUNCTION schedules.notify_sooner();
CREATE TRIGGER jobs_sooner AFTER UPDATE OF next_run_at, is_active ON schedules.jobs
    FOR EACH ROW WHEN (
        NEW.is_active AND (NOT OLD.is_active OR OLD.next_run_at IS NULL OR NEW.next_run_at < OLD.next_run_at)
    ) EXECUTE FUNCTION schedules.notify_sooner();
