-- Realtime (InsForge's `realtime` schema): channels, messages, retention, `realtime.publish()`.
--
-- Who may subscribe and who may publish is decided by Row Level Security, as in InsForge: a SELECT on
-- `realtime.channels` is the subscribe check, an INSERT into `realtime.messages` the publish check, both run
-- as the caller with `realtime.channel_name()` set to the channel asked for. Unlike InsForge, RLS is on from
-- the start and no policy opens it: nobody but an admin subscribes or publishes until the developer writes a
-- policy. The developer writes them as project_admin (raw SQL), so project_admin owns the two tables.
--
-- Every new message fires `NOTIFY realtime_message, '<id>'`. A notification is delivered when its
-- transaction commits and never when it rolls back, so `realtime.publish()` inside any transaction reaches
-- subscribers after commit only.

CREATE SCHEMA realtime;
REVOKE ALL ON SCHEMA realtime FROM PUBLIC;
GRANT USAGE ON SCHEMA realtime TO anon, authenticated, project_admin;

CREATE TABLE realtime.channels (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- An exact name ("orders") or a LIKE pattern with % wildcards ("order:%", "chat:%:messages").
    pattern text NOT NULL UNIQUE,
    description text,
    webhook_urls text[],
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX channels_enabled_idx ON realtime.channels (enabled);

CREATE TABLE realtime.messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_name text NOT NULL,
    -- SET NULL when the channel is deleted: the history stays, named by channel_name.
    channel_id uuid REFERENCES realtime.channels (id) ON DELETE SET NULL,
    channel_name text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}'::jsonb,
    sender_type text NOT NULL DEFAULT 'system' CHECK (sender_type IN ('system', 'user')),
    sender_id uuid,
    ws_audience_count integer NOT NULL DEFAULT 0,
    wh_audience_count integer NOT NULL DEFAULT 0,
    wh_delivered_count integer NOT NULL DEFAULT 0,
    -- Set by the one process that takes on the message's webhooks (several may hear the notification).
    webhooks_claimed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_channel_id_idx ON realtime.messages (channel_id);
CREATE INDEX messages_channel_name_idx ON realtime.messages (channel_name);
CREATE INDEX messages_created_at_idx ON realtime.messages (created_at DESC);
CREATE INDEX messages_event_name_idx ON realtime.messages (event_name);

-- One row: retention, and the secret that signs webhook deliveries (never readable by a request role).
CREATE TABLE realtime.config (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    retention_days integer CHECK (retention_days IS NULL OR retention_days > 0),
    webhook_secret text NOT NULL
        DEFAULT encode(sha256((gen_random_uuid()::text || gen_random_uuid()::text)::bytea), 'hex'),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO realtime.config (id) VALUES (true);

CREATE FUNCTION realtime.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END
$$;
CREATE TRIGGER channels_updated_at BEFORE UPDATE ON realtime.channels
FOR EACH ROW EXECUTE FUNCTION realtime.touch_updated_at();

-- The channel a permission check is about; NULL outside one. Policies use it.
CREATE FUNCTION realtime.channel_name() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT nullif(current_setting('realtime.channel_name', true), '')
$$;

-- The enabled channel a name falls under: an exact pattern first, then a wildcard one.
CREATE FUNCTION realtime.matching_channel(p_channel_name text) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
AS $$
    SELECT id FROM realtime.channels
    WHERE enabled AND (pattern = p_channel_name OR p_channel_name LIKE pattern)
    ORDER BY pattern = p_channel_name DESC, length(pattern) DESC
    LIMIT 1
$$;

-- Publish from SQL (a trigger, a function, any transaction): the message is stored now and delivered when
-- the transaction commits. Returns the message id, or NULL (with a warning) when no enabled channel matches.
CREATE FUNCTION realtime.publish(p_channel_name text, p_event_name text, p_payload jsonb) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
    v_channel_id uuid;
    v_message_id uuid;
BEGIN
    v_channel_id := realtime.matching_channel(p_channel_name);
    IF v_channel_id IS NULL THEN
        RAISE WARNING 'Realtime: No matching channel found for "%"', p_channel_name;
        RETURN NULL;
    END IF;
    INSERT INTO realtime.messages (event_name, channel_id, channel_name, payload, sender_type)
    VALUES (p_event_name, v_channel_id, p_channel_name, coalesce(p_payload, '{}'::jsonb), 'system')
    RETURNING id INTO v_message_id;
    RETURN v_message_id;
END
$$;

CREATE FUNCTION realtime.notify_message() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
BEGIN
    -- Only the id: a payload may exceed NOTIFY's 8000 bytes; the listener reads the row.
    PERFORM pg_notify('realtime_message', NEW.id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER messages_notify AFTER INSERT ON realtime.messages
FOR EACH ROW EXECUTE FUNCTION realtime.notify_message();

-- Retention: delete what is older than `retention_days` (nothing when it is NULL), in batches.
CREATE FUNCTION realtime.cleanup_messages(p_batch_size integer DEFAULT 1000) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
DECLARE
    v_days integer;
    v_deleted integer;
    v_total integer := 0;
BEGIN
    SELECT retention_days INTO v_days FROM realtime.config;
    IF v_days IS NULL THEN
        RETURN 0;
    END IF;
    LOOP
        DELETE FROM realtime.messages WHERE id IN (
            SELECT id FROM realtime.messages
            WHERE created_at < now() - make_interval(days => v_days)
            ORDER BY created_at LIMIT p_batch_size
        );
        GET DIAGNOSTICS v_deleted = ROW_COUNT;
        v_total := v_total + v_deleted;
        EXIT WHEN v_deleted < p_batch_size;
    END LOOP;
    RETURN v_total;
END
$$;
REVOKE ALL ON FUNCTION realtime.cleanup_messages(integer) FROM PUBLIC;

-- Row Level Security: the request roles read channels (subscribe) and add messages (publish), as far as the
-- developer's policies allow; project_admin owns both tables (so it may write those policies and bypasses
-- them). realtime.config stays the owner's alone.
ALTER TABLE realtime.channels ENABLE ROW LEVEL SECURITY;
ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON realtime.channels TO anon, authenticated;
GRANT INSERT ON realtime.messages TO anon, authenticated;
REVOKE ALL ON FUNCTION realtime.channel_name() FROM PUBLIC;
REVOKE ALL ON FUNCTION realtime.matching_channel(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION realtime.publish(text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION realtime.channel_name() TO anon, authenticated, project_admin;
-- Triggers on the developer's tables run as whoever changed the row: publishing must work for all of them.
-- The schema is hidden from the records API, so no client calls it directly.
GRANT EXECUTE ON FUNCTION realtime.publish(text, text, jsonb) TO anon, authenticated, project_admin;
GRANT EXECUTE ON FUNCTION realtime.matching_channel(text) TO anon, authenticated, project_admin;

DO $$
BEGIN
    -- The owner keeps its rights (and is not bound by the policies) once project_admin owns the tables.
    EXECUTE format('GRANT ALL ON realtime.channels, realtime.messages TO %I', current_user);
    ALTER TABLE realtime.channels OWNER TO project_admin;
    ALTER TABLE realtime.messages OWNER TO project_admin;
    ALTER FUNCTION realtime.publish(text, text, jsonb) OWNER TO project_admin;
    ALTER FUNCTION realtime.matching_channel(text) OWNER TO project_admin;
    EXECUTE format('CREATE POLICY kilnbase_owner ON realtime.channels TO %I USING (true) WITH CHECK (true)',
                   current_user);
    EXECUTE format('CREATE POLICY kilnbase_owner ON realtime.messages TO %I USING (true) WITH CHECK (true)',
                   current_user);
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'project_admin cannot own the realtime tables: policies on them need the owner';
END
$$;
