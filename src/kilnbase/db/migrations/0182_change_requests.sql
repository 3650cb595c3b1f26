-- High-risk operations an agent asked for, waiting for a person: the exact tool call, why it needs approval,
-- its dry run, who asked, and how it ended. An approval runs the stored call once, as the agent that asked.
CREATE TABLE system.change_requests (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'done', 'failed', 'rejected', 'expired')),
    tool text NOT NULL,
    arguments jsonb NOT NULL,
    reason text NOT NULL,
    dry_run jsonb,
    requested_by text NOT NULL,
    agent_key uuid NOT NULL,
    -- The agent's session (for replay): the approved run is recorded in it.
    session text,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL DEFAULT now() + interval '24 hours',
    decided_by text,
    decided_at timestamptz,
    decision_note text,
    result jsonb
);
CREATE INDEX change_requests_pending_idx ON system.change_requests (created_at) WHERE status = 'pending';
