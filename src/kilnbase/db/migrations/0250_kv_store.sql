-- The key-value store (InsForge's `kv` schema, `/api/kv`): JSON values addressed by (namespace, key), each
-- with an optional expiry. An entry with no owner belongs to the project-global store, which the API key
-- (and admins, and agents) manage; an entry with an owner belongs to that end user.
--
-- End users' requests run as `authenticated` or `anon` (`kv/service.py`), and Row Level Security decides, as
-- InsForge's policies do: a caller reads its own entries, any `public` one, and, signed in, any `authed` one;
-- it writes only its own. `anon` may only read. project_admin (raw SQL of admins) sees and changes every
-- entry through a policy (the role has no BYPASSRLS). The schema is Kilnbase's own: the records API never
-- exposes it (`db/kilnbase_schemas.py`).
CREATE SCHEMA kv;
REVOKE ALL ON SCHEMA kv FROM PUBLIC;
GRANT USAGE ON SCHEMA kv TO anon, authenticated, project_admin;

CREATE TABLE kv.entries (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- NULL: the project-global store.
    owner_id uuid,
    -- One URL path segment each: no '/', no NUL (Postgres text holds none), InsForge's length caps.
    namespace text NOT NULL CHECK (length(namespace) BETWEEN 1 AND 256 AND strpos(namespace, '/') = 0),
    key text NOT NULL CHECK (length(key) BETWEEN 1 AND 512 AND strpos(key, '/') = 0),
    value jsonb NOT NULL,
    visibility text NOT NULL DEFAULT 'private' CHECK (visibility IN ('private', 'authed', 'public')),
    -- NULL: never expires. Reads treat an entry past its expiry as absent at once; the prune deletes it later.
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- One entry per key and owner, the global store (NULL owner) included.
    CONSTRAINT entries_owner_namespace_key UNIQUE NULLS NOT DISTINCT (owner_id, namespace, key)
);
-- The prune (`KvStore.prune_expired`): only the entries that expire.
CREATE INDEX entries_expires_at ON kv.entries (expires_at) WHERE expires_at IS NOT NULL;

-- What incr and decr add to: a JSON number, null (0, as in InsForge), or a string holding a plain decimal
-- number (InsForge converts it too); NULL for anything else (not a number).
CREATE FUNCTION kv.number_of(value jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog
AS $$
    SELECT CASE jsonb_typeof(value)
        WHEN 'number' THEN value::numeric
        WHEN 'null' THEN 0
        WHEN 'string' THEN CASE
            WHEN (value #>> '{}') ~ '^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,3})?\s*$'
            THEN (value #>> '{}')::numeric
        END
    END
$$;
REVOKE ALL ON FUNCTION kv.number_of(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kv.number_of(jsonb) TO anon, authenticated, project_admin;

ALTER TABLE kv.entries ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON kv.entries FROM PUBLIC;
GRANT SELECT ON kv.entries TO anon;
GRANT SELECT, INSERT, UPDATE, DELETE ON kv.entries TO authenticated, project_admin;

CREATE POLICY kv_entries_admin ON kv.entries AS PERMISSIVE FOR ALL TO project_admin
    USING (true) WITH CHECK (true);
CREATE POLICY kv_entries_select ON kv.entries FOR SELECT TO anon, authenticated
    USING (
        owner_id = (SELECT auth.uid())
        OR visibility = 'public'
        OR (visibility = 'authed' AND (SELECT auth.uid()) IS NOT NULL)
    );
CREATE POLICY kv_entries_insert ON kv.entries FOR INSERT TO authenticated
    WITH CHECK (owner_id = (SELECT auth.uid()));
CREATE POLICY kv_entries_update ON kv.entries FOR UPDATE TO authenticated
    USING (owner_id = (SELECT auth.uid()))
    WITH CHECK (owner_id = (SELECT auth.uid()));
CREATE POLICY kv_entries_delete ON kv.entries FOR DELETE TO authenticated
    USING (owner_id = (SELECT auth.uid()));

-- A signed-in user's live entries are bounded: without a bound, one account could fill the database with
-- values that never expire. The bound is the request's `kilnbase.kv_max_user_entries` (the KV service sets
-- it from KILNBASE_KV_MAX_USER_ENTRIES in every user's transaction), 10,000 when unset. Counted under a lock
-- of the user's own, so that concurrent writes cannot pass it together; writing a key the user already holds
-- (an upsert's update) is never refused. The project's own entries (no owner) are the API key's, unbounded.
CREATE FUNCTION kv.bound_user_entries() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
DECLARE
    v_most int := coalesce(nullif(current_setting('kilnbase.kv_max_user_entries', true), '')::int, 10000);
BEGIN
    IF NEW.owner_id IS NULL THEN
        RETURN NEW;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('kilnbase.kv:' || NEW.owner_id::text, 0));
    IF EXISTS (
        SELECT 1 FROM kv.entries e
        WHERE e.owner_id = NEW.owner_id AND e.namespace = NEW.namespace AND e.key = NEW.key
    ) THEN
        RETURN NEW;
    END IF;
    IF (SELECT count(*) FROM kv.entries e
        WHERE e.owner_id = NEW.owner_id AND (e.expires_at IS NULL OR e.expires_at > now())) >= v_most THEN
        RAISE EXCEPTION 'kilnbase.kv: a user may hold at most % entries', v_most
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION kv.bound_user_entries() FROM PUBLIC;
CREATE TRIGGER entries_bound_user_entries BEFORE INSERT ON kv.entries
    FOR EACH ROW EXECUTE FUNCTION kv.bound_user_entries();
