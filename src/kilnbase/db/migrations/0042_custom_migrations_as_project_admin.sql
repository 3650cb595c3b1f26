-- Custom migrations run as project_admin on the request pool, so they record themselves through this
-- function (the only way project_admin writes to system.custom_migrations): the statements and their record
-- commit or roll back together. A version applied twice is a unique violation, which the API answers 409.
CREATE OR REPLACE FUNCTION system.record_custom_migration(version text, name text, statements text[])
RETURNS TABLE (version text, name text, statements text[], created_at timestamptz)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
AS $$
    INSERT INTO system.custom_migrations AS m (version, name, statements)
    VALUES (record_custom_migration.version, record_custom_migration.name, record_custom_migration.statements)
    RETURNING m.version, m.name, m.statements, m.created_at
$$;
REVOKE ALL ON FUNCTION system.record_custom_migration(text, text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION system.record_custom_migration(text, text, text[]) TO project_admin;
-- Reading the record is harmless (the API lists it to every admin): apply checks it before it runs anything.
GRANT SELECT ON system.custom_migrations TO project_admin;
