-- What the database admin API needs: the updated_at trigger function that tables created through the API
-- use (InsForge's name), and the record of custom migrations applied through /api/database/migrations.

CREATE OR REPLACE FUNCTION system.update_updated_at() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END
$$;

-- project_admin owns the tables the API creates, so it attaches this trigger; nothing else in system is granted.
GRANT USAGE ON SCHEMA system TO project_admin;
REVOKE ALL ON FUNCTION system.update_updated_at() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION system.update_updated_at() TO project_admin;

CREATE TABLE system.custom_migrations (
    version text PRIMARY KEY CHECK (version ~ '^[0-9]{1,20}$'),
    name text NOT NULL,
    statements text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- After owner-level raw SQL, hand what it created in public to project_admin, so that the admin API and
-- guarded raw SQL can still alter it. Tables carry their owned sequences with them.
CREATE OR REPLACE FUNCTION system.reassign_public_objects_to_project_admin() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
    obj record;
    moved integer := 0;
BEGIN
    FOR obj IN
        SELECT c.oid::regclass AS name, c.relkind
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = 'project_admin')
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO project_admin',
                       CASE obj.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                        WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
                       obj.name);
        moved := moved + 1;
    END LOOP;
    RETURN moved;
END
$$;
REVOKE ALL ON FUNCTION system.reassign_public_objects_to_project_admin() FROM PUBLIC;
