-- A table in public is closed until a policy opens it, however it was created (API, raw SQL, psql).
--
-- Request roles get table privileges (as in Supabase), and Row Level Security decides which rows: every new
-- table gets RLS enabled and a `project_admin_policy` (InsForge's name), so anon and authenticated users see
-- nothing until the developer writes a policy for them. Enabling RLS by hand adds the admin policy too.

CREATE OR REPLACE FUNCTION system.secure_new_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
    obj record;
BEGIN
    FOR obj IN
        SELECT * FROM pg_event_trigger_ddl_commands()
        WHERE schema_name = 'public' AND object_type IN ('table', 'sequence')
    LOOP
        IF obj.object_type = 'sequence' THEN
            EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO anon, authenticated, project_admin',
                           obj.object_identity);
            CONTINUE;
        END IF;
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', obj.object_identity);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %s TO anon, authenticated',
                       obj.object_identity);
        EXECUTE format('GRANT ALL ON TABLE %s TO project_admin', obj.object_identity);
        PERFORM system.ensure_admin_policy(obj.objid);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION system.ensure_admin_policy(table_oid oid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = table_oid AND polname = 'project_admin_policy') THEN
        EXECUTE format('CREATE POLICY project_admin_policy ON %s AS PERMISSIVE FOR ALL TO project_admin '
                       'USING (true) WITH CHECK (true)', table_oid::regclass);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION system.admin_policy_on_rls_enable() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
    obj record;
BEGIN
    FOR obj IN
        SELECT c.oid
        FROM pg_event_trigger_ddl_commands() AS cmd
        JOIN pg_class AS c ON c.oid = cmd.objid
        WHERE cmd.schema_name = 'public' AND cmd.object_type = 'table' AND c.relrowsecurity
    LOOP
        PERFORM system.ensure_admin_policy(obj.oid);
    END LOOP;
END
$$;

REVOKE ALL ON FUNCTION system.secure_new_tables(), system.ensure_admin_policy(oid),
    system.admin_policy_on_rls_enable() FROM PUBLIC;

DROP EVENT TRIGGER IF EXISTS kilnbase_secure_new_tables;
CREATE EVENT TRIGGER kilnbase_secure_new_tables ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO')
    EXECUTE FUNCTION system.secure_new_tables();

DROP EVENT TRIGGER IF EXISTS kilnbase_admin_policy_on_rls_enable;
CREATE EVENT TRIGGER kilnbase_admin_policy_on_rls_enable ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION system.admin_policy_on_rls_enable();

-- Schema changes by anyone (API, raw SQL, psql) tell every Kilnbase process to refresh its schema cache.
CREATE OR REPLACE FUNCTION system.notify_schema_change() RETURNS event_trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('kilnbase_schema', tg_tag);
END
$$;

DROP EVENT TRIGGER IF EXISTS kilnbase_notify_ddl;
CREATE EVENT TRIGGER kilnbase_notify_ddl ON ddl_command_end EXECUTE FUNCTION system.notify_schema_change();
DROP EVENT TRIGGER IF EXISTS kilnbase_notify_drop;
CREATE EVENT TRIGGER kilnbase_notify_drop ON sql_drop EXECUTE FUNCTION system.notify_schema_change();
