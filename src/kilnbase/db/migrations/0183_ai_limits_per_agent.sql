-- Model budgets per agent key: `agent/<agent key id>`, or `agent/*` for each agent key without its own row.
ALTER TABLE ai.limits DROP CONSTRAINT limits_scope_check;
ALTER TABLE ai.limits ADD CONSTRAINT limits_scope_check
    CHECK (scope IN ('project', 'key', 'user', 'anon', 'agent'));
