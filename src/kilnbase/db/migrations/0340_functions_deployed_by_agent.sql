-- Whether an agent key deployed a function, or changed it last (`functions/egress.py`): such a function runs
-- in workers of its own that may not reach private networks. An admin deploying it again (code, status or
-- secrets) clears it; an admin renaming it does not.
ALTER TABLE functions.definitions ADD COLUMN deployed_by_agent boolean NOT NULL DEFAULT false;

-- Functions deployed before this column: marked when the audit trail's latest change that would set or
-- clear the mark (an agent's create or update, an admin's create, or an admin's update of code, status or
-- secrets) was an agent's.
UPDATE functions.definitions d SET deployed_by_agent = true
WHERE (
    SELECT a.agent_key IS NOT NULL FROM system.audit_logs a
    WHERE a.module = 'FUNCTIONS' AND a.outcome = 'success'
      AND a.action IN ('CREATE_FUNCTION', 'UPDATE_FUNCTION')
      AND a.details ->> 'slug' = d.slug
      AND a.created_at >= d.created_at
      AND (
          a.agent_key IS NOT NULL OR a.action = 'CREATE_FUNCTION'
          OR (a.details -> 'changes' ->> 'code') = 'true'
          OR (a.details -> 'changes') ?| ARRAY['status', 'secrets']
      )
    ORDER BY a.created_at DESC, a.id DESC
    LIMIT 1
);
