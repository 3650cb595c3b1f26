-- The gateway's holes from review (issue 10, items 13 to 15).

-- Anon callers (the anon key, anon-role tokens) get no model access unless the policy grants it, and then
-- limits of their own (scope 'anon', subject '*' = per client address, or one address).
-- Request fields beyond the standard ones (plugins, provider, transforms, ...) reach a provider only when the
-- policy names them.
ALTER TABLE ai.policy
    ADD COLUMN anon_access boolean NOT NULL DEFAULT false,
    ADD COLUMN allowed_request_fields text[] NOT NULL DEFAULT '{}';

ALTER TABLE ai.limits DROP CONSTRAINT limits_scope_check;
ALTER TABLE ai.limits ADD CONSTRAINT limits_scope_check CHECK (scope IN ('project', 'key', 'user', 'anon'));

-- Prices an admin sets for models no catalog prices (registered providers), in USD per token, per request and
-- per image: what a reservation against a USD cap costs, and the ledger's cost when the provider reports none.
CREATE TABLE ai.model_prices (
    model_id text PRIMARY KEY,
    prompt numeric NOT NULL DEFAULT 0 CHECK (prompt >= 0),
    completion numeric NOT NULL DEFAULT 0 CHECK (completion >= 0),
    request numeric NOT NULL DEFAULT 0 CHECK (request >= 0),
    image numeric NOT NULL DEFAULT 0 CHECK (image >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
