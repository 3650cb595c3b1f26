-- Who did what, when, and with what outcome: every admin and agent action.
CREATE TABLE system.audit_logs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    actor text NOT NULL,
    action text NOT NULL,
    module text NOT NULL,
    details jsonb,
    ip_address inet,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_logs_created_at_idx ON system.audit_logs (created_at DESC);
CREATE INDEX audit_logs_module_idx ON system.audit_logs (module, created_at DESC);
CREATE INDEX audit_logs_actor_idx ON system.audit_logs (actor, created_at DESC);

REVOKE ALL ON SCHEMA system FROM PUBLIC;
