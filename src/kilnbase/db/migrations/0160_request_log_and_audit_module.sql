-- The API's request log, read by GET /api/logs/insforge.logs and postgREST.logs: one row per request,
-- written in batches by each process and trimmed to a bounded number of rows. UNLOGGED: it is a debugging
-- aid, not a record (a crash may lose it; the audit log is the record), and it costs no WAL.
CREATE UNLOGGED TABLE system.request_logs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL,
    method text NOT NULL,
    path text NOT NULL,
    status smallint NOT NULL,
    duration_ms real NOT NULL,
    role text NOT NULL
);
CREATE INDEX request_logs_created_at_idx ON system.request_logs (created_at);

-- The audit log's `module` filter is case-insensitive, as InsForge's dashboard sends it in any case.
CREATE INDEX audit_logs_module_upper_idx ON system.audit_logs (upper(module), created_at DESC);
