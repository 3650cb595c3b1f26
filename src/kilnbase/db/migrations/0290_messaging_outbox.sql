-- The messaging outbox (InsForge's `messaging` schema, `/api/messaging`): transactional messages an admin
-- queues with POST /api/messaging/send, which a worker in each server process (`messaging/runner.py`) claims
-- and sends through the project's SMTP server, retrying with a growing pause and moving a message that runs
-- out of attempts to the dead-letter table.
--
-- InsForge's columns and statuses. Kilnbase-internal, unlike InsForge's (which lets every signed-in user read
-- the outbox, message bodies included): no request role may read or write these tables; the service and the
-- worker run on the owner's pool, and the records API never exposes the schema (`db/kilnbase_schemas.py`).
CREATE SCHEMA messaging;
REVOKE ALL ON SCHEMA messaging FROM PUBLIC;

CREATE TABLE messaging.outbox (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    channel text NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    -- pending: waits for `next_attempt_at`; claimed: a worker is sending it, while its lease runs; sent: the
    -- SMTP server took it. (InsForge's check also names delivered, failed and dead; a dead message is in
    -- the dead-letter table, never here.)
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'claimed', 'sent')),
    -- {to, subject, body, metadata}: what the request gave.
    payload jsonb NOT NULL,
    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    -- The claim: which worker, under which token (a worker whose lease ran out, and whose message another
    -- worker took, can no longer mark it: every later update names the token), until when.
    claimed_by text,
    claimed_at timestamptz,
    lease_expires_at timestamptz,
    claim_token uuid,
    -- Failed attempts so far, and the attempts a message has in all (`KILNBASE_MESSAGING_MAX_RETRIES` when it
    -- was queued).
    retry_count integer NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    max_retries integer NOT NULL CHECK (max_retries >= 1),
    next_attempt_at timestamptz DEFAULT now(),
    provider_message_id text,
    -- The last failed attempt's error, in Kilnbase's words (never the SMTP server's reply text).
    error_message text CHECK (length(error_message) <= 1000),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    CHECK (status <> 'claimed' OR (claim_token IS NOT NULL AND lease_expires_at IS NOT NULL))
);
CREATE UNIQUE INDEX outbox_idempotency_key ON messaging.outbox (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- What the worker claims (pending, due) and reclaims (claimed, lease run out).
CREATE INDEX outbox_pending_due ON messaging.outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX outbox_claimed_lease ON messaging.outbox (lease_expires_at) WHERE status = 'claimed';
-- The retention sweep of sent messages.
CREATE INDEX outbox_sent_at ON messaging.outbox (sent_at) WHERE status = 'sent';

-- Messages that ran out of attempts (or that the SMTP server refused for good), as InsForge keeps them; a
-- retry (POST /api/messaging/dead-letter/:id/retry) moves one back to the outbox under its id.
CREATE TABLE messaging.dead_letter (
    id uuid PRIMARY KEY,
    channel text NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    payload jsonb NOT NULL,
    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    retry_count integer NOT NULL,
    max_retries integer NOT NULL,
    error_message text CHECK (length(error_message) <= 1000),
    created_at timestamptz NOT NULL,
    moved_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX dead_letter_idempotency_key ON messaging.dead_letter (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX dead_letter_moved_at ON messaging.dead_letter (moved_at DESC, id);

-- One row per attempt (InsForge's `delivery_attempts`), kept for the retention.
CREATE TABLE messaging.delivery_attempts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    message_id uuid NOT NULL,
    attempt_number integer NOT NULL,
    worker_id text NOT NULL,
    status text NOT NULL CHECK (status IN ('sent', 'failed')),
    provider_message_id text,
    error_message text CHECK (length(error_message) <= 1000),
    duration_ms integer,
    attempted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_attempts_message ON messaging.delivery_attempts (message_id, attempt_number);
CREATE INDEX delivery_attempts_attempted_at ON messaging.delivery_attempts (attempted_at);

REVOKE ALL ON ALL TABLES IN SCHEMA messaging FROM PUBLIC;
