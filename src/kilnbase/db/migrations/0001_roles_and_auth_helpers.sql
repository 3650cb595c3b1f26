-- The three request roles and the PostgREST/InsForge SQL helpers that RLS policies use.
-- Roles are cluster-wide: several Kilnbase databases (or other apps) may share a cluster, so creation
-- tolerates a role that already exists, including one created concurrently.

DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated', 'project_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', role_name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
    END LOOP;
END
$$;

CREATE SCHEMA IF NOT EXISTS auth;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, project_admin;

-- The request's JWT claims, '{}' outside a request.
CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
$$;

-- The caller's user id; NULL for anon, and for third-party subjects that are not UUIDs (use auth.jwt()->>'sub').
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN sub ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN sub::uuid
    END
    FROM (SELECT nullif(auth.jwt() ->> 'sub', '') AS sub) AS claim
$$;

CREATE OR REPLACE FUNCTION auth.role() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT coalesce(nullif(auth.jwt() ->> 'role', ''), current_setting('role', true))
$$;

CREATE OR REPLACE FUNCTION auth.email() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT nullif(auth.jwt() ->> 'email', '')
$$;

GRANT EXECUTE ON FUNCTION auth.jwt(), auth.uid(), auth.role(), auth.email() TO anon, authenticated, project_admin;

-- The public schema: readable by every request role; project_admin may create objects in it.
GRANT USAGE ON SCHEMA public TO anon, authenticated, project_admin;
GRANT CREATE ON SCHEMA public TO project_admin;
