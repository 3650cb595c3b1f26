-- The model gateway: credentials, providers, configurations, policy, virtual keys, limits, counters, ledger.
-- Internal to the gateway (the owner reads and writes it); nothing here is reachable through the records API.
CREATE SCHEMA ai;
REVOKE ALL ON SCHEMA ai FROM PUBLIC;

-- BYOK keys, encrypted with the project's SecretBox; `masked` is the only form ever shown.
CREATE TABLE ai.credentials (
    name text PRIMARY KEY,
    encrypted_value text NOT NULL,
    masked text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Extra OpenAI-compatible providers (OpenAI, Ollama, vLLM, ...), routed by the `name/` model prefix.
CREATE TABLE ai.providers (
    name text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    base_url text NOT NULL,
    encrypted_key text,
    masked_key text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- InsForge's configurations: a model with its system prompt (always first) and fallbacks.
CREATE TABLE ai.configurations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    input_modality text[] NOT NULL DEFAULT '{text}',
    output_modality text[] NOT NULL DEFAULT '{text}',
    provider text NOT NULL DEFAULT 'openrouter',
    model_id text NOT NULL UNIQUE,
    system_prompt text,
    client_system_messages text NOT NULL DEFAULT 'append'
        CHECK (client_system_messages IN ('append', 'drop', 'refuse')),
    fallback_models text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Project-wide policy: one row.
CREATE TABLE ai.policy (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    allowed_models text[],
    max_tokens_cap integer CHECK (max_tokens_cap > 0),
    cache_enabled boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO ai.policy (id) VALUES (true);

-- Gateway (virtual) keys: only the SHA-256 of the key is kept.
CREATE TABLE ai.gateway_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    key_hash text NOT NULL UNIQUE,
    key_prefix text NOT NULL,
    models text[],
    max_tokens integer CHECK (max_tokens > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Limits per scope: project ('*'), key (gateway key id) and user (user id, or '*' for every user).
CREATE TABLE ai.limits (
    scope text NOT NULL CHECK (scope IN ('project', 'key', 'user')),
    subject text NOT NULL,
    rpm integer CHECK (rpm >= 0),
    tpm bigint CHECK (tpm >= 0),
    tokens_per_day bigint CHECK (tokens_per_day >= 0),
    usd_per_day numeric CHECK (usd_per_day >= 0),
    usd_per_month numeric CHECK (usd_per_month >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, subject)
);

-- Fixed-window counters; a reservation adds to them before the call, the settlement corrects them after.
CREATE TABLE ai.counters (
    scope text NOT NULL,
    subject text NOT NULL,
    window_kind text NOT NULL CHECK (window_kind IN ('minute', 'day', 'month')),
    window_start timestamptz NOT NULL,
    requests integer NOT NULL DEFAULT 0,
    tokens bigint NOT NULL DEFAULT 0,
    usd numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, subject, window_kind, window_start)
);

-- Reserve against every window in one statement: all or nothing. Each item is
-- {scope, subject, window, start, tokens, usd, max_requests?, max_tokens?, max_usd?}; an item that would pass
-- its limit raises (SQLSTATE P0001, message = the item's index), which rolls every increment back.
CREATE FUNCTION ai.reserve(items jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    item jsonb;
    position integer := 0;
    granted boolean;
BEGIN
    FOR item IN SELECT value FROM jsonb_array_elements(items) LOOP
        granted := NULL;
        INSERT INTO ai.counters AS c (scope, subject, window_kind, window_start, requests, tokens, usd)
        VALUES (item->>'scope', item->>'subject', item->>'window', (item->>'start')::timestamptz, 1,
                (item->>'tokens')::bigint, (item->>'usd')::numeric)
        ON CONFLICT (scope, subject, window_kind, window_start) DO UPDATE
            SET requests = c.requests + 1, tokens = c.tokens + excluded.tokens, usd = c.usd + excluded.usd
            WHERE (item->>'max_requests' IS NULL OR c.requests + 1 <= (item->>'max_requests')::bigint)
              AND (item->>'max_tokens' IS NULL OR c.tokens + excluded.tokens <= (item->>'max_tokens')::bigint)
              AND (item->>'max_usd' IS NULL OR c.usd + excluded.usd <= (item->>'max_usd')::numeric)
        RETURNING true INTO granted;
        IF granted IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = position::text;
        END IF;
        position := position + 1;
    END LOOP;
END
$$;

-- The usage ledger: one row per request, streams (and abandoned streams) included.
CREATE TABLE ai.usage (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now(),
    endpoint text NOT NULL,
    principal text NOT NULL,
    user_id text,
    key_id text,
    key_source text,
    provider text,
    requested_model text,
    model text,
    config_id uuid,
    input_tokens integer NOT NULL DEFAULT 0,
    output_tokens integer NOT NULL DEFAULT 0,
    cached_tokens integer NOT NULL DEFAULT 0,
    image_count integer NOT NULL DEFAULT 0,
    cost_usd numeric NOT NULL DEFAULT 0,
    latency_ms integer,
    ttft_ms integer,
    status text NOT NULL,
    http_status integer,
    streamed boolean NOT NULL DEFAULT false,
    cache_hit boolean NOT NULL DEFAULT false,
    error text
);
CREATE INDEX usage_created_at_idx ON ai.usage (created_at DESC);
CREATE INDEX usage_key_idx ON ai.usage (key_id, created_at DESC);
CREATE INDEX usage_user_idx ON ai.usage (user_id, created_at DESC);
CREATE INDEX usage_config_idx ON ai.usage (config_id, created_at DESC);
CREATE INDEX usage_model_idx ON ai.usage (model, created_at DESC);
