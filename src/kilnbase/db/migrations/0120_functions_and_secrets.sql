-- Project secrets (InsForge's `system.secrets`) and edge functions (`functions.*`).
-- Both are Kilnbase-internal: the owner reads and writes them; the records API never shows them.

-- Secrets: values encrypted with the project's SecretBox (AES-256-GCM, the key's name bound as associated
-- data). A delete is soft (`is_active = false`); a create of the same key revives it.
CREATE TABLE system.secrets (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    key text NOT NULL UNIQUE CHECK (key ~ '^[A-Z0-9_]+$' AND length(key) <= 255),
    value_ciphertext text NOT NULL,
    is_active boolean NOT NULL DEFAULT true,
    is_reserved boolean NOT NULL DEFAULT false,
    last_used_at timestamptz,
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE SCHEMA functions;
REVOKE ALL ON SCHEMA functions FROM PUBLIC;

-- One row per function. `revision` grows with every change of code or status, so every API process knows
-- when its warm workers run an old version. `secrets` is the function's allow-list of secret keys (NULL:
-- every active secret, as InsForge does).
CREATE TABLE functions.definitions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug text NOT NULL UNIQUE CHECK (slug ~ '^[A-Za-z0-9_-]+$' AND length(slug) <= 64),
    name text NOT NULL,
    description text,
    code text NOT NULL,
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('draft', 'active', 'error')),
    secrets text[],
    revision bigint NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deployed_at timestamptz
);

-- Console output, uncaught errors and one line per invocation; served by the logs API as `function.logs`.
CREATE TABLE functions.logs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    slug text,
    request_id text,
    level text,
    message text,
    status int,
    duration_ms double precision
);
CREATE INDEX logs_slug_created_at ON functions.logs (slug, created_at DESC);
CREATE INDEX logs_created_at ON functions.logs (created_at DESC);

-- Every API process reloads a function's workers when its definition or the secrets change.
CREATE FUNCTION functions.notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'definitions' THEN
        PERFORM pg_notify('kilnbase_functions', 'function:' || coalesce(NEW.slug, OLD.slug));
    ELSE
        PERFORM pg_notify('kilnbase_functions', 'secrets');
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER definitions_changed AFTER INSERT OR UPDATE OR DELETE ON functions.definitions
    FOR EACH ROW EXECUTE FUNCTION functions.notify_change();
CREATE TRIGGER secrets_changed AFTER INSERT OR UPDATE OF value_ciphertext, is_active, expires_at OR DELETE
    ON system.secrets FOR EACH ROW EXECUTE FUNCTION functions.notify_change();
