-- The advisor (InsForge's `system.advisor_*`): each scan of the app's database, what it found, and the findings
-- an admin chose to ignore. Kilnbase-internal: only the owner reads and writes these tables.

CREATE TABLE system.advisor_scans (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    status text NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    scan_type text NOT NULL DEFAULT 'manual' CHECK (scan_type IN ('manual', 'scheduled')),
    scanned_at timestamptz NOT NULL DEFAULT now(),
    -- Rules whose query failed (or timed out): the scan says so rather than reporting them clean.
    error_message text,
    -- Rules that could not run here, and why (slow-query without pg_stat_statements): [{ruleId, reason}].
    skipped_rules jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(skipped_rules) = 'array')
);
CREATE INDEX advisor_scans_scanned_at ON system.advisor_scans (scanned_at DESC);

CREATE TABLE system.advisor_findings (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    scan_id uuid NOT NULL REFERENCES system.advisor_scans (id) ON DELETE CASCADE,
    rule_id text NOT NULL,
    severity text NOT NULL CHECK (severity IN ('critical', 'warning', 'info')),
    category text NOT NULL CHECK (category IN ('security', 'performance', 'health')),
    title text NOT NULL,
    description text NOT NULL,
    affected_object text,
    recommendation text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX advisor_findings_scan ON system.advisor_findings (scan_id, rule_id, affected_object);

-- A suppression hides findings across scans: one (rule, affected object) pair ('instance'), or a whole rule
-- ('rule', no object). One per fingerprint.
CREATE TABLE system.advisor_suppressions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    rule_id text NOT NULL CHECK (length(rule_id) <= 200),
    affected_object text CHECK (length(affected_object) <= 500),
    scope text NOT NULL CHECK (scope IN ('instance', 'rule')),
    reason text NOT NULL CHECK (reason IN ('false_positive', 'accepted_risk', 'wont_fix', 'other')),
    note text CHECK (length(note) <= 1000),
    created_by text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((scope = 'rule' AND affected_object IS NULL) OR (scope = 'instance' AND affected_object IS NOT NULL))
);
CREATE UNIQUE INDEX advisor_suppressions_fingerprint
    ON system.advisor_suppressions (rule_id, coalesce(affected_object, ''));

REVOKE ALL ON system.advisor_scans, system.advisor_findings, system.advisor_suppressions FROM PUBLIC;
