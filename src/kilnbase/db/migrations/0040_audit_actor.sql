-- The audit trail says where an action came from and how it ended: the client's user agent, the agent key
-- and MCP tool that made the call (for agents), and the outcome (success, refused, failed).
ALTER TABLE system.audit_logs
    ADD COLUMN user_agent text,
    ADD COLUMN agent_key text,
    ADD COLUMN tool text,
    ADD COLUMN outcome text NOT NULL DEFAULT 'success' CHECK (outcome IN ('success', 'refused', 'failed'));
