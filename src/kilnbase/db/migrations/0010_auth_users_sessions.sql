-- Auth: users, their linked OAuth identities, stored sessions (refresh-token families), the auth config,
-- one-time codes for email flows, SMTP settings, email templates, OAuth configs and flow state.
-- Everything here is internal: request roles may read only the public part of a user (id, profile, created_at).

CREATE TABLE auth.users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL,
    password text,
    email_verified boolean NOT NULL DEFAULT false,
    profile jsonb NOT NULL DEFAULT '{}'::jsonb,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_project_admin boolean NOT NULL DEFAULT false,
    is_anonymous boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_lowercase CHECK (email = lower(email))
);
CREATE UNIQUE INDEX users_email_key ON auth.users (email);

GRANT SELECT (id, profile, created_at) ON auth.users TO anon, authenticated, project_admin;

CREATE TABLE auth.user_providers (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    provider text NOT NULL,
    provider_account_id text NOT NULL,
    provider_data jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_account_id)
);
CREATE INDEX user_providers_user_idx ON auth.user_providers (user_id);

-- One row per refresh token. Rotation inserts the successor in the same family and marks the old row used;
-- presenting a used token again revokes the whole family (it was stolen, or replayed).
CREATE TABLE auth.sessions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    family_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('user', 'admin')),
    user_id uuid REFERENCES auth.users (id) ON DELETE CASCADE,
    subject text NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    client_type text NOT NULL DEFAULT 'web',
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    revoked_at timestamptz,
    user_agent text,
    ip_address inet
);
CREATE INDEX sessions_family_idx ON auth.sessions (family_id);
CREATE INDEX sessions_subject_idx ON auth.sessions (subject) WHERE revoked_at IS NULL;

CREATE TABLE auth.config (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    singleton boolean NOT NULL DEFAULT true UNIQUE CHECK (singleton),
    require_email_verification boolean NOT NULL DEFAULT false,
    password_min_length integer NOT NULL DEFAULT 6 CHECK (password_min_length BETWEEN 4 AND 128),
    require_number boolean NOT NULL DEFAULT false,
    require_lowercase boolean NOT NULL DEFAULT false,
    require_uppercase boolean NOT NULL DEFAULT false,
    require_special_char boolean NOT NULL DEFAULT false,
    verify_email_method text NOT NULL DEFAULT 'code' CHECK (verify_email_method IN ('code', 'link')),
    reset_password_method text NOT NULL DEFAULT 'code' CHECK (reset_password_method IN ('code', 'link')),
    allowed_redirect_urls text[] NOT NULL DEFAULT '{}',
    disable_signup boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO auth.config DEFAULT VALUES;

-- One live code or link token per (email, purpose). Codes are stored as keyed hashes; `attempts_count` caps
-- guessing; `last_sent_at` is the per-address cooldown shared by every process.
CREATE TABLE auth.email_otps (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL,
    purpose text NOT NULL CHECK (purpose IN ('VERIFY_EMAIL', 'RESET_PASSWORD', 'SIGN_IN')),
    otp_type text NOT NULL CHECK (otp_type IN ('NUMERIC_CODE', 'HASH_TOKEN')),
    otp_hash text NOT NULL,
    expires_at timestamptz NOT NULL,
    consumed_at timestamptz,
    attempts_count integer NOT NULL DEFAULT 0,
    redirect_to text,
    last_sent_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (email, purpose)
);
CREATE INDEX email_otps_hash_idx ON auth.email_otps (purpose, otp_hash);

CREATE TABLE auth.smtp_config (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    singleton boolean NOT NULL DEFAULT true UNIQUE CHECK (singleton),
    enabled boolean NOT NULL DEFAULT false,
    host text NOT NULL DEFAULT '',
    port integer NOT NULL DEFAULT 587 CHECK (port BETWEEN 1 AND 65535),
    username text NOT NULL DEFAULT '',
    password_ciphertext text,
    sender_email text NOT NULL DEFAULT '',
    sender_name text NOT NULL DEFAULT '',
    min_interval_seconds integer NOT NULL DEFAULT 60 CHECK (min_interval_seconds >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE auth.email_templates (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    template_type text NOT NULL UNIQUE,
    subject text NOT NULL,
    body_html text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO auth.email_templates (template_type, subject, body_html) VALUES
('email-verification-code', 'Verify your email',
 '<p>Your verification code is <strong>{{ code }}</strong>.</p><p>It expires in {{ expires_in_minutes }} minutes.</p>'),
('email-verification-link', 'Verify your email',
 '<p><a href="{{ link }}">Verify your email address</a></p><p>The link expires in {{ expires_in_minutes }} minutes.</p>'),
('request-otp', 'Your sign-in code',
 '<p>Your sign-in code is <strong>{{ code }}</strong>.</p><p>It expires in {{ expires_in_minutes }} minutes.</p>'),
('reset-password-code', 'Reset your password',
 '<p>Your password reset code is <strong>{{ code }}</strong>.</p><p>It expires in {{ expires_in_minutes }} minutes.</p>'),
('reset-password-link', 'Reset your password',
 '<p><a href="{{ link }}">Reset your password</a></p><p>The link expires in {{ expires_in_minutes }} minutes.</p>');

CREATE TABLE auth.oauth_configs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider text NOT NULL UNIQUE,
    client_id text,
    client_secret_ciphertext text,
    scopes text[],
    redirect_uri text,
    use_shared_key boolean NOT NULL DEFAULT false,
    native_client_ids text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE auth.custom_oauth_configs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    key text NOT NULL UNIQUE CHECK (key ~ '^[a-z0-9_-]{1,64}$'),
    name text NOT NULL,
    discovery_endpoint text NOT NULL,
    client_id text NOT NULL,
    client_secret_ciphertext text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A started OAuth flow: the `state` sent to the provider is this row's random id, used once.
CREATE TABLE auth.oauth_flows (
    state_hash bytea PRIMARY KEY,
    provider text NOT NULL,
    redirect_uri text NOT NULL,
    code_challenge text NOT NULL,
    provider_code_verifier text NOT NULL,
    nonce text NOT NULL,
    expires_at timestamptz NOT NULL
);

-- The one-time `insforge_code` handed to the app after a provider callback, redeemed with the PKCE verifier.
CREATE TABLE auth.oauth_exchange_codes (
    code_hash bytea PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    code_challenge text NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Rotated project keys (API key, anon key): the current one and the previous ones until their grace ends.
CREATE TABLE system.project_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind text NOT NULL CHECK (kind IN ('api_key', 'anon_key')),
    key_ciphertext text NOT NULL,
    is_current boolean NOT NULL DEFAULT true,
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX project_keys_one_current ON system.project_keys (kind) WHERE is_current;
