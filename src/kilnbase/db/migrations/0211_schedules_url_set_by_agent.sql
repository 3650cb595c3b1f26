-- Whether an agent key set a schedule's URL last (`schedules/reach.py`): such a job may call only public
-- addresses and the project's own URL, and each run resolves and checks its host again before the call.
-- An admin setting the URL clears it.
ALTER TABLE schedules.jobs ADD COLUMN url_set_by_agent boolean NOT NULL DEFAULT false;

-- Jobs made before this column: marked when the audit trail says an agent key set their URL last (the
-- create or update that wrote `functionUrl`, written in the same transaction as the change).
UPDATE schedules.jobs j SET url_set_by_agent = true
WHERE (
    SELECT a.agent_key IS NOT NULL FROM system.audit_logs a
    WHERE a.module = 'SCHEDULES' AND a.outcome = 'success'
      AND a.action IN ('CREATE_SCHEDULE', 'UPDATE_SCHEDULE')
      AND a.details ->> 'id' = j.id::text AND a.details ? 'functionUrl'
    ORDER BY a.created_at DESC, a.id DESC
    LIMIT 1
);
