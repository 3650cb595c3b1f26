-- An agent's SQL that ran and was rolled back to wait for a person is recorded as what it was: an attempt that
-- is now held (`held`), beside the change request it became (REQUEST_APPROVAL) and, once approved, the run.
ALTER TABLE system.audit_logs DROP CONSTRAINT audit_logs_outcome_check;
ALTER TABLE system.audit_logs
    ADD CONSTRAINT audit_logs_outcome_check CHECK (outcome IN ('success', 'refused', 'failed', 'held'));
