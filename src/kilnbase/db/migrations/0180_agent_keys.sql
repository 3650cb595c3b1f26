-- Credentials for coding agents (`kba_...`): named, scoped, expiring, revocable. Only a SHA-256 of the
-- secret is kept (the secret is shown once, at creation). Every process holds the live keys in memory
-- (`identity/agent_keys.py`) and reloads them when this table or the project-wide agent settings change.
CREATE TABLE system.agent_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- The first characters of the secret, to tell keys apart in a listing.
    prefix text NOT NULL,
    secret_sha256 bytea NOT NULL UNIQUE,
    scopes text[] NOT NULL CHECK (cardinality(scopes) BETWEEN 1 AND 100),
    can_approve boolean NOT NULL DEFAULT false,
    expires_at timestamptz,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Project-wide switches for agents: one row. `read_only` refuses every write from any agent key.
CREATE TABLE system.agent_settings (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    read_only boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO system.agent_settings DEFAULT VALUES;

CREATE FUNCTION system.notify_agent_keys_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
BEGIN
    PERFORM pg_notify('kilnbase_agent_keys', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER agent_keys_changed AFTER INSERT OR UPDATE OR DELETE ON system.agent_keys
FOR EACH STATEMENT EXECUTE FUNCTION system.notify_agent_keys_changed();
CREATE TRIGGER agent_settings_changed AFTER UPDATE ON system.agent_settings
FOR EACH STATEMENT EXECUTE FUNCTION system.notify_agent_keys_changed();
