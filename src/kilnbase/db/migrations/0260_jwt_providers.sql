-- External JWT providers (InsForge's `auth._jwt_providers`, `/api/auth/jwt-providers`): identity providers
-- (Clerk, Auth0, Firebase, WorkOS, a company's own OIDC) whose access tokens the project accepts, verified
-- against each provider's JWKS, the caller acting as the provider's `default_role` with its subject as the
-- user id that RLS reads. A provider mints identities, so only the admin changes this table (never an agent
-- key: `auth/jwt_providers.py`), and only the owner reads it. Every process holds the enabled providers in
-- memory (`identity/external_tokens.py`) and reloads them on `NOTIFY kilnbase_jwt_providers`.
CREATE TABLE auth.jwt_providers (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    provider_key text NOT NULL UNIQUE CHECK (provider_key ~ '^[a-z0-9_-]{1,64}$'),
    -- The `iss` its tokens carry, compared exactly.
    issuer text NOT NULL CHECK (length(issuer) BETWEEN 1 AND 2048),
    -- The `aud` its tokens must carry; NULL: not checked.
    audience text CHECK (length(audience) <= 2048),
    jwks_url text NOT NULL CHECK (length(jwks_url) <= 2048),
    -- Request claim -> dot path into the provider's token; `sub` and `email` always present.
    claim_mappings jsonb NOT NULL DEFAULT '{"sub": "sub", "email": "email"}'
        CHECK (jsonb_typeof(claim_mappings) = 'object' AND claim_mappings ? 'sub' AND claim_mappings ? 'email'),
    default_role text NOT NULL DEFAULT 'authenticated'
        CHECK (default_role IN ('anon', 'authenticated', 'project_admin')),
    -- 'text': any subject (use auth.uid_text() in policies); 'uuid': tokens whose sub is not a UUID are refused.
    subject_type text NOT NULL DEFAULT 'text' CHECK (subject_type IN ('text', 'uuid')),
    is_enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jwt_providers_issuer ON auth.jwt_providers (issuer);
REVOKE ALL ON auth.jwt_providers FROM PUBLIC;

CREATE FUNCTION auth.notify_jwt_providers_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
BEGIN
    PERFORM pg_notify('kilnbase_jwt_providers', '');
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION auth.notify_jwt_providers_changed() FROM PUBLIC;

CREATE TRIGGER jwt_providers_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON auth.jwt_providers
FOR EACH STATEMENT EXECUTE FUNCTION auth.notify_jwt_providers_changed();

-- The caller's subject as text, whatever its form (InsForge's uid_text(), migration 029): an external
-- provider's subjects are often not UUIDs ("user_2x...", "auth0|abc"), for which auth.uid() is NULL.
CREATE FUNCTION auth.uid_text() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT nullif(auth.jwt() ->> 'sub', '')
$$;
GRANT EXECUTE ON FUNCTION auth.uid_text() TO anon, authenticated, project_admin;
