-- Responses kept for retries: a mutating request or tool call sent again with the same Idempotency-Key by
-- the same credential within 24 hours gets the first response back instead of running twice. `status` is
-- null while the first call runs. Rows older than a day are dead and are removed as new ones arrive.
CREATE TABLE system.idempotency_keys (
    owner text NOT NULL,
    key text NOT NULL,
    request_sha256 bytea NOT NULL,
    status integer,
    headers jsonb,
    body bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, key)
);
CREATE INDEX idempotency_keys_created_at_idx ON system.idempotency_keys (created_at);
