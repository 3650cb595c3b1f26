-- Rate-limit counters shared by every API process (`http/rate_limit.py`): one row per key and fixed window.
-- UNLOGGED: no WAL for a counter bumped on every public auth request; a crash empties the table, which only
-- starts every window afresh.
CREATE UNLOGGED TABLE system.rate_limits (
    key text PRIMARY KEY,
    hits integer NOT NULL,
    resets_at timestamptz NOT NULL
);
