-- Database webhooks (InsForge's `/api/database/webhooks`): a row trigger on an app table that sends each
-- INSERT, UPDATE or DELETE to a URL as an HTTP POST. InsForge's trigger calls pg_notify and a listener
-- sends the request, so a change made while no listener runs is never sent. Here the trigger writes an
-- outbox row in the changing transaction instead: a rolled-back change sends nothing, a committed one is
-- kept until it is delivered (or given up after its retries), and the runner in each server process
-- (`database_webhooks/runner.py`) claims each row once. Kilnbase-internal: only the owner reads these tables,
-- and the trigger function writes the outbox as a role that may do nothing else.
CREATE SCHEMA database_webhooks;
REVOKE ALL ON SCHEMA database_webhooks FROM PUBLIC;

CREATE TABLE database_webhooks.hooks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    table_schema text NOT NULL,
    table_name text NOT NULL,
    events text[] NOT NULL CHECK (
        events <@ ARRAY['INSERT', 'UPDATE', 'DELETE']::text[] AND cardinality(events) > 0
    ),
    url text NOT NULL CHECK (length(url) <= 2048),
    -- The signing secret, encrypted with the project's SecretBox (the hook's id bound as associated data).
    secret_ciphertext text,
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- What is still to be delivered: written by the trigger, deleted once delivered or given up.
CREATE TABLE database_webhooks.outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id uuid NOT NULL REFERENCES database_webhooks.hooks (id) ON DELETE CASCADE,
    event_type text NOT NULL,
    table_name text NOT NULL,
    payload jsonb NOT NULL,
    -- Attempts made so far; the next is due at `next_attempt_at`, which a claim moves past the attempt's
    -- time limit (a process that dies mid-attempt frees the row when it passes).
    attempts int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_due ON database_webhooks.outbox (next_attempt_at);
CREATE INDEX outbox_webhook ON database_webhooks.outbox (webhook_id);

-- One row per attempt, in InsForge's log shape (plus the attempt's number).
CREATE TABLE database_webhooks.logs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    webhook_id uuid NOT NULL REFERENCES database_webhooks.hooks (id) ON DELETE CASCADE,
    delivery_id bigint NOT NULL,
    attempt int NOT NULL,
    event_type text NOT NULL,
    table_name text NOT NULL,
    payload jsonb NOT NULL,
    status_code int,
    error text CHECK (length(error) <= 1000),
    success boolean NOT NULL,
    delivered_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX logs_webhook_delivered_at ON database_webhooks.logs (webhook_id, delivered_at DESC);
CREATE INDEX logs_delivered_at ON database_webhooks.logs (delivered_at);

REVOKE ALL ON ALL TABLES IN SCHEMA database_webhooks FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA database_webhooks FROM PUBLIC;

-- A row as JSON, without running the app's code. `capture()` runs with rights the app does not have, and
-- to_jsonb converts a value of a type Postgres does not ship (an enum, a domain over one, an extension's
-- type) with the type's cast to json when one exists: a function the app may have written. So only columns
-- of built-in types (a domain over one included: to_jsonb looks through it) go through to_jsonb; any other
-- column goes as its text output (output functions are built in, or C that only a superuser can add),
-- which is also what to_jsonb sends for such a type when it has no cast. Composite and array columns of
-- the app's types are then sent as their text form rather than as JSON objects and arrays.
CREATE FUNCTION database_webhooks.row_json(r anyelement, rel oid) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog
AS $$
DECLARE
    v_values text;
    v_out jsonb;
BEGIN
    IF num_nulls(r) = 1 THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
          AND (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END) >= 16384
    ) THEN
        RETURN to_jsonb(r);
    END IF;
    SELECT string_agg(
        CASE WHEN (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END) < 16384
            THEN format('(%1$L, to_jsonb(($1).%2$I))', a.attname, a.attname)
            ELSE format(
                '(%1$L, CASE WHEN num_nulls(($1).%2$I) = 1 THEN ''null''::jsonb '
                'ELSE to_jsonb(format(''%%s'', ($1).%2$I)) END)', a.attname, a.attname)
        END, ', ' ORDER BY a.attnum)
    INTO v_values
    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped;
    EXECUTE 'SELECT jsonb_object_agg(k, v) FROM (VALUES ' || v_values || ') AS c(k, v)' INTO v_out USING r;
    RETURN v_out;
END
$$;
REVOKE ALL ON FUNCTION database_webhooks.row_json(anyelement, oid) FROM PUBLIC;

-- The trigger on an app table, one per webhook (named for it, given its id). It fires for every change, and
-- queues one only while the webhook is enabled and wants that event: switching a webhook off or changing its
-- events is then a row update, with no lock on the app's table. The row goes as `record` (new) and
-- `old_record` (old), InsForge's payload (`row_json`: no app code runs here); a payload over 256 KiB of JSON
-- keeps only the rows' primary key columns, with `"truncated": true`. Identical notifications of one
-- transaction are sent once, on commit.
CREATE FUNCTION database_webhooks.capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
    v_record jsonb;
    v_old jsonb;
    v_payload jsonb;
    v_keys text[];
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM database_webhooks.hooks
        WHERE id = TG_ARGV[0]::uuid AND enabled AND TG_OP = ANY (events)
    ) THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        v_record := database_webhooks.row_json(NEW, TG_RELID);
    END IF;
    IF TG_OP <> 'INSERT' THEN
        v_old := database_webhooks.row_json(OLD, TG_RELID);
    END IF;
    v_payload := jsonb_build_object('event', TG_OP, 'table', TG_TABLE_NAME, 'record', v_record,
                                    'old_record', v_old);
    IF octet_length(v_payload::text) > 262144 THEN
        SELECT coalesce(array_agg(a.attname::text), '{}') INTO v_keys
        FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
        WHERE i.indrelid = TG_RELID AND i.indisprimary;
        v_payload := jsonb_build_object(
            'event', TG_OP, 'table', TG_TABLE_NAME,
            'record', (SELECT jsonb_object_agg(k, v_record -> k) FROM unnest(v_keys) k
                       WHERE v_record IS NOT NULL),
            'old_record', (SELECT jsonb_object_agg(k, v_old -> k) FROM unnest(v_keys) k WHERE v_old IS NOT NULL),
            'truncated', true);
    END IF;
    INSERT INTO database_webhooks.outbox (webhook_id, event_type, table_name, payload)
    VALUES (TG_ARGV[0]::uuid, TG_OP, TG_TABLE_NAME, v_payload);
    PERFORM pg_notify('kilnbase_database_webhooks', '');
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION database_webhooks.capture() FROM PUBLIC;

-- The role the trigger function runs as: it reads whether a webhook wants an event and adds to the outbox,
-- nothing more (roles are cluster-wide, so creation tolerates one that exists). An owner that may neither
-- create it nor hand the function to it never keeps it as a SECURITY DEFINER function of its own (the
-- owner may be a superuser): the function becomes SECURITY INVOKER, and creating a webhook is refused
-- until an operator sets the role up (docs/database-webhooks.md says what to run).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'kilnbase_webhook_capture') THEN
        BEGIN
            CREATE ROLE kilnbase_webhook_capture NOLOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE
                NOREPLICATION;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    GRANT USAGE ON SCHEMA database_webhooks TO kilnbase_webhook_capture;
    GRANT SELECT (id, enabled, events) ON database_webhooks.hooks TO kilnbase_webhook_capture;
    GRANT INSERT (webhook_id, event_type, table_name, payload) ON database_webhooks.outbox
        TO kilnbase_webhook_capture;
    GRANT USAGE ON SEQUENCE database_webhooks.outbox_id_seq TO kilnbase_webhook_capture;
    GRANT EXECUTE ON FUNCTION database_webhooks.row_json(anyelement, oid) TO kilnbase_webhook_capture;
    IF NOT pg_has_role(current_user, 'kilnbase_webhook_capture', 'MEMBER') THEN
        EXECUTE format('GRANT kilnbase_webhook_capture TO %I', current_user);
    END IF;
    ALTER FUNCTION database_webhooks.capture() OWNER TO kilnbase_webhook_capture;
EXCEPTION WHEN insufficient_privilege THEN
    ALTER FUNCTION database_webhooks.capture() SECURITY INVOKER;
    RAISE WARNING 'database webhooks are off: the role kilnbase_webhook_capture could not be set up';
END
$$;
