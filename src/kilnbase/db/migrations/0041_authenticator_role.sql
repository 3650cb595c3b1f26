-- The authenticator: the login role of the request pool (PostgREST's model). NOINHERIT and a member of the
-- three request roles only, so it can become anon, authenticated or project_admin, and nothing is left when a
-- request's SQL steps back out of them. Its password is set at every start by Kilnbase (db/roles.py).
-- An owner that may not create roles skips this; Kilnbase then refuses to start and prints the statement.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'kilnbase_authenticator') THEN
        BEGIN
            CREATE ROLE kilnbase_authenticator LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'cannot create role kilnbase_authenticator: an operator must create it';
                RETURN;
        END;
    END IF;
    GRANT anon, authenticated, project_admin TO kilnbase_authenticator;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cannot grant the request roles to kilnbase_authenticator: an operator must';
END
$$;

-- The request roles cannot log in, and never inherit: a role is taken explicitly, per transaction.
ALTER ROLE anon NOLOGIN NOINHERIT;
ALTER ROLE authenticated NOLOGIN NOINHERIT;
ALTER ROLE project_admin NOLOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
