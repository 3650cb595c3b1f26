-- Payments through Stripe (InsForge's `payments` schema, `/api/payments/stripe/...`): each environment's
-- connection (test, live), a mirror of its catalog, the checkout and customer portal sessions the app's users
-- start, which Stripe customer pays for which billing subject (a user, a team...), the payment history and
-- the subscriptions that Stripe's webhook events keep current, and each event received (once: Stripe
-- retries). Stripe is the source of truth; these rows are what the app, its admin and its agents read.
--
-- Table and column names are InsForge's (migration 049), so the queries its guides show read the same rows.
-- Razorpay and Paystack are not here: `provider` is always 'stripe'.
--
-- Secrets live apart, in `payments.provider_secrets`, encrypted with the project's SecretBox, and no request
-- role may read that table. Users' checkout and portal sessions are written as the user, under Row Level
-- Security: by default a user may start one for no billing subject (a one-time purchase) or for the subject
-- {type: 'user', id: <their own id>}; the anon key only for no subject. Other subjects (a team) are opened
-- by a policy the project owner adds (docs/payments.md), or by a server-side call with the API key.
CREATE SCHEMA payments;
REVOKE ALL ON SCHEMA payments FROM PUBLIC;
GRANT USAGE ON SCHEMA payments TO anon, authenticated, project_admin;

CREATE TABLE payments.provider_connections (
    provider text NOT NULL DEFAULT 'stripe' CHECK (provider = 'stripe'),
    environment text NOT NULL CHECK (environment IN ('test', 'live')),
    status text NOT NULL DEFAULT 'unconfigured' CHECK (status IN ('unconfigured', 'connected', 'error')),
    provider_account_id text,
    account_email text,
    account_livemode boolean,
    webhook_endpoint_id text,
    webhook_endpoint_url text,
    webhook_configured_at timestamptz,
    last_synced_at timestamptz,
    last_sync_status text CHECK (last_sync_status IS NULL OR last_sync_status IN ('succeeded', 'failed')),
    last_sync_error text,
    last_sync_counts jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, environment)
);

-- The secret key and the webhook signing secret of an environment, SecretBox ciphertexts (bound to the
-- environment and the kind of secret). Only Kilnbase's owner reads them.
CREATE TABLE payments.provider_secrets (
    provider text NOT NULL DEFAULT 'stripe' CHECK (provider = 'stripe'),
    environment text NOT NULL CHECK (environment IN ('test', 'live')),
    secret_key_ciphertext text NOT NULL,
    -- The last four characters of the key, for its mask (`sk_test_****abcd`) without decrypting it.
    secret_key_mask text NOT NULL,
    webhook_secret_ciphertext text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, environment)
);

CREATE TABLE payments.stripe_products (
    environment text NOT NULL CHECK (environment IN ('test', 'live')),
    product_id text NOT NULL,
    name text NOT NULL,
    description text,
    active boolean NOT NULL,
    default_price_id text,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    raw jsonb NOT NULL DEFAULT '{}'::jsonb,
    synced_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment, product_id)
);

CREATE TABLE payments.stripe_prices (
    environment text NOT NULL CHECK (environment IN ('test', 'live')),
    price_id text NOT NULL,
    product_id text,
    active boolean NOT NULL,
    currency text NOT NULL,
    unit_amount bigint,
    unit_amount_decimal text,
    type text NOT NULL,
    lookup_key text,
    billing_scheme text,
    tax_behavior text,
    recurring_interval text,
    recurring_interval_count integer,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    raw jsonb NOT NULL DEFAULT '{}'::jsonb,
    synced_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment, price_id)
);
CREATE INDEX stripe_prices_product ON payments.stripe_prices (environment, product_id);

-- Which Stripe customer pays for which billing subject (from checkout, invoices and subscriptions).
CREATE TABLE payments.customer_mappings (
    provider text NOT NULL DEFAULT 'stripe' CHECK (provider = 'stripe'),
    environment text NOT NULL CHECK (environment IN ('test', 'live')),
    subject_type text NOT NULL,
    subject_id text NOT NULL,
    provider_customer_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, environment, subject_type, subject_id)
);
CREATE INDEX customer_mappings_customer ON payments.customer_mappings (provider, environment, provider_customer_id);

CREATE TABLE payments.stripe_checkout_sessions (
    id uuid PRIMARY KEY,
    environment text NOT NULL CHECK (environment IN ('test', 'live')),
    mode text NOT NULL CHECK (mode IN ('payment', 'subscription')),
    status text NOT NULL DEFAULT 'initialized'
        CHECK (status IN ('initialized', 'open', 'completed', 'expired', 'failed')),
    payment_status text CHECK (payment_status IS NULL OR payment_status IN ('paid', 'unpaid', 'no_payment_required')),
    subject_type text,
    subject_id text,
    customer_email text,
    line_items jsonb NOT NULL CHECK (jsonb_typeof(line_items) = 'array'),
    success_url text NOT NULL,
    cancel_url text NOT NULL,
    idempotency_key text,
    request_hash text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- The user who started it (NULL: the anon key, or the API key); RLS checks it against the caller.
    created_by text,
    checkout_session_id text,
    customer_id text,
    payment_intent_id text,
    subscription_id text,
    url text,
    last_error text,
    raw jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((subject_type IS NULL) = (subject_id IS NULL))
);
CREATE UNIQUE INDEX stripe_checkout_sessions_idempotency
    ON payments.stripe_checkout_sessions (environment, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX stripe_checkout_sessions_stripe_id
    ON payments.stripe_checkout_sessions (environment, checkout_session_id) WHERE checkout_session_id IS NOT NULL;

CREATE TABLE payments.stripe_customer_portal_sessions (
    id uuid PRIMARY KEY,
    environment text NOT NULL CHECK (environment IN ('test', 'live')),
    status text NOT NULL DEFAULT 'initialized' CHECK (status IN ('initialized', 'created', 'failed')),
    subject_type text NOT NULL,
    subject_id text NOT NULL,
    created_by text,
    customer_id text,
    return_url text,
    configuration_id text,
    url text,
    last_error text,
    raw jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The payment history: one-time payments, subscription invoices, failed payments, refund state.
CREATE TABLE payments.transactions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider text NOT NULL DEFAULT 'stripe' CHECK (provider = 'stripe'),
    environment text NOT NULL CHECK (environment IN ('test', 'live')),
    type text NOT NULL CHECK (type IN ('one_time_payment', 'subscription_invoice', 'refund', 'failed_payment')),
    status text NOT NULL CHECK (status IN ('succeeded', 'failed', 'pending', 'refunded', 'partially_refunded')),
    subject_type text,
    subject_id text,
    provider_customer_id text,
    customer_email_snapshot text,
    -- The Stripe object this row stands for: a payment intent when there is one, else the invoice or the
    -- checkout session; one row per object.
    provider_object_type text NOT NULL,
    provider_object_id text NOT NULL,
    related_object_ids jsonb NOT NULL DEFAULT '{}'::jsonb,
    amount bigint,
    amount_refunded bigint NOT NULL DEFAULT 0,
    currency text,
    description text,
    paid_at timestamptz,
    failed_at timestamptz,
    refunded_at timestamptz,
    provider_created_at timestamptz,
    raw jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, environment, provider_object_type, provider_object_id)
);
CREATE INDEX transactions_subject ON payments.transactions (environment, subject_type, subject_id);
CREATE INDEX transactions_created ON payments.transactions (environment, provider_created_at DESC);

CREATE TABLE payments.stripe_subscriptions (
    environment text NOT NULL CHECK (environment IN ('test', 'live')),
    subscription_id text NOT NULL,
    customer_id text,
    subject_type text,
    subject_id text,
    status text NOT NULL,
    current_period_start timestamptz,
    current_period_end timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    cancel_at timestamptz,
    canceled_at timestamptz,
    trial_start timestamptz,
    trial_end timestamptz,
    latest_invoice_id text,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    raw jsonb NOT NULL DEFAULT '{}'::jsonb,
    synced_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment, subscription_id)
);
CREATE INDEX stripe_subscriptions_subject ON payments.stripe_subscriptions (environment, subject_type, subject_id);

CREATE TABLE payments.stripe_subscription_items (
    environment text NOT NULL CHECK (environment IN ('test', 'live')),
    subscription_item_id text NOT NULL,
    subscription_id text NOT NULL,
    product_id text,
    price_id text,
    quantity bigint,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment, subscription_item_id),
    FOREIGN KEY (environment, subscription_id)
        REFERENCES payments.stripe_subscriptions (environment, subscription_id) ON DELETE CASCADE
);

-- Every event Stripe sent, once per (environment, event id): a retry of a processed event changes nothing.
CREATE TABLE payments.webhook_events (
    provider text NOT NULL DEFAULT 'stripe' CHECK (provider = 'stripe'),
    environment text NOT NULL CHECK (environment IN ('test', 'live')),
    provider_event_id text NOT NULL,
    event_type text NOT NULL,
    livemode boolean NOT NULL,
    account_id text,
    object_type text,
    object_id text,
    processing_status text NOT NULL DEFAULT 'pending'
        CHECK (processing_status IN ('pending', 'processed', 'failed', 'ignored')),
    attempt_count integer NOT NULL DEFAULT 1,
    last_error text,
    payload jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, environment, provider_event_id)
);

-- The admin's raw SQL (project_admin) reads what the API shows; never the secrets.
GRANT SELECT ON payments.provider_connections, payments.stripe_products, payments.stripe_prices,
    payments.customer_mappings, payments.transactions, payments.stripe_subscriptions,
    payments.stripe_subscription_items, payments.webhook_events TO project_admin;

-- Sessions are written as the caller (`payments/service.py`), under these policies; the owner updates them.
GRANT SELECT, INSERT ON payments.stripe_checkout_sessions TO anon, authenticated, project_admin;
GRANT SELECT, INSERT ON payments.stripe_customer_portal_sessions TO authenticated, project_admin;
ALTER TABLE payments.stripe_checkout_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE payments.stripe_customer_portal_sessions ENABLE ROW LEVEL SECURITY;

CREATE POLICY checkout_sessions_admin ON payments.stripe_checkout_sessions FOR ALL TO project_admin
    USING (true) WITH CHECK (true);
CREATE POLICY checkout_sessions_own_select ON payments.stripe_checkout_sessions FOR SELECT TO authenticated
    USING (created_by = (SELECT auth.uid())::text);
CREATE POLICY checkout_sessions_user_insert ON payments.stripe_checkout_sessions FOR INSERT TO authenticated
    WITH CHECK (
        created_by = (SELECT auth.uid())::text
        AND (subject_type IS NULL OR (subject_type = 'user' AND subject_id = (SELECT auth.uid())::text))
    );
CREATE POLICY checkout_sessions_anon_insert ON payments.stripe_checkout_sessions FOR INSERT TO anon
    WITH CHECK (created_by IS NULL AND subject_type IS NULL);

CREATE POLICY portal_sessions_admin ON payments.stripe_customer_portal_sessions FOR ALL TO project_admin
    USING (true) WITH CHECK (true);
CREATE POLICY portal_sessions_own_select ON payments.stripe_customer_portal_sessions FOR SELECT TO authenticated
    USING (created_by = (SELECT auth.uid())::text);
CREATE POLICY portal_sessions_user_insert ON payments.stripe_customer_portal_sessions FOR INSERT TO authenticated
    WITH CHECK (
        created_by = (SELECT auth.uid())::text
        AND subject_type = 'user' AND subject_id = (SELECT auth.uid())::text
    );
