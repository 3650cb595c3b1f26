-- Payments through Razorpay (InsForge's `/api/payments/razorpay/...`, its migration 049): the shared tables
-- of 0310 (connections, secrets, customer mappings, the payment history, webhook events) take a second
-- provider, and Razorpay gets its own mirrors: catalog items and plans, subscriptions, and the orders the
-- app's users create. Table and column names are InsForge's.
--
-- The key id, key secret and webhook secret live in `payments.provider_secrets` as Stripe's do (SecretBox
-- ciphertexts, read by Kilnbase's owner only), so a restore keeps them as it keeps Stripe's. Orders and
-- subscriptions are written as the user under Row Level Security with the same defaults as Stripe's
-- checkout sessions: a user for no billing subject or for `{type: 'user', id: <their id>}`, the anon key
-- only for no subject (orders; a subscription always has a subject).

ALTER TABLE payments.provider_connections DROP CONSTRAINT provider_connections_provider_check,
    ADD CONSTRAINT provider_connections_provider_check CHECK (provider IN ('stripe', 'razorpay')),
    ADD COLUMN account_name text;
ALTER TABLE payments.provider_secrets DROP CONSTRAINT provider_secrets_provider_check,
    ADD CONSTRAINT provider_secrets_provider_check CHECK (provider IN ('stripe', 'razorpay')),
    -- Razorpay's key id (`rzp_test_...`), the public half of its key pair, encrypted all the same.
    ADD COLUMN key_id_ciphertext text;
ALTER TABLE payments.customer_mappings DROP CONSTRAINT customer_mappings_provider_check,
    ADD CONSTRAINT customer_mappings_provider_check CHECK (provider IN ('stripe', 'razorpay'));
ALTER TABLE payments.transactions DROP CONSTRAINT transactions_provider_check,
    ADD CONSTRAINT transactions_provider_check CHECK (provider IN ('stripe', 'razorpay'));
ALTER TABLE payments.webhook_events DROP CONSTRAINT webhook_events_provider_check,
    ADD CONSTRAINT webhook_events_provider_check CHECK (provider IN ('stripe', 'razorpay'));

CREATE TABLE payments.razorpay_items (
    environment text NOT NULL CHECK (environment IN ('test', 'live')),
    item_id text NOT NULL,
    name text NOT NULL,
    description text,
    active boolean NOT NULL DEFAULT true,
    amount bigint,
    unit_amount bigint,
    currency text NOT NULL,
    type text,
    raw jsonb NOT NULL DEFAULT '{}'::jsonb,
    provider_created_at timestamptz,
    synced_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment, item_id)
);

CREATE TABLE payments.razorpay_plans (
    environment text NOT NULL CHECK (environment IN ('test', 'live')),
    plan_id text NOT NULL,
    item_id text NOT NULL,
    period text NOT NULL,
    interval integer NOT NULL,
    amount bigint,
    unit_amount bigint,
    currency text NOT NULL,
    active boolean NOT NULL DEFAULT true,
    notes jsonb NOT NULL DEFAULT '{}'::jsonb,
    raw jsonb NOT NULL DEFAULT '{}'::jsonb,
    provider_created_at timestamptz,
    synced_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment, plan_id)
);

CREATE TABLE payments.razorpay_subscriptions (
    environment text NOT NULL CHECK (environment IN ('test', 'live')),
    subscription_id text NOT NULL,
    plan_id text NOT NULL,
    customer_id text,
    subject_type text,
    subject_id text,
    status text NOT NULL CHECK (status IN ('created', 'authenticated', 'active', 'pending', 'halted',
        'cancelled', 'completed', 'expired', 'paused')),
    current_start timestamptz,
    current_end timestamptz,
    ended_at timestamptz,
    quantity bigint,
    charge_at timestamptz,
    start_at timestamptz,
    end_at timestamptz,
    total_count bigint,
    auth_attempts bigint,
    paid_count bigint,
    remaining_count bigint,
    short_url text,
    has_scheduled_changes boolean NOT NULL DEFAULT false,
    change_scheduled_at timestamptz,
    offer_id text,
    authorization_payment_id text,
    authorization_verified_at timestamptz,
    notes jsonb NOT NULL DEFAULT '{}'::jsonb,
    raw jsonb NOT NULL DEFAULT '{}'::jsonb,
    provider_created_at timestamptz,
    synced_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment, subscription_id)
);
CREATE INDEX razorpay_subscriptions_subject
    ON payments.razorpay_subscriptions (environment, subject_type, subject_id);

CREATE TABLE payments.razorpay_orders (
    id uuid PRIMARY KEY,
    environment text NOT NULL CHECK (environment IN ('test', 'live')),
    status text NOT NULL DEFAULT 'initialized'
        CHECK (status IN ('initialized', 'created', 'attempted', 'paid', 'failed')),
    subject_type text,
    subject_id text,
    customer_name text,
    customer_email text,
    customer_contact text,
    order_id text,
    receipt text,
    amount bigint NOT NULL,
    amount_paid bigint,
    amount_due bigint,
    currency text NOT NULL,
    attempts integer,
    verified_payment_id text,
    verified_at timestamptz,
    description text,
    callback_url text,
    notes jsonb NOT NULL DEFAULT '{}'::jsonb,
    raw jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_error text,
    -- The user who created it (NULL: the anon key, or the API key); RLS checks it against the caller.
    created_by text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((subject_type IS NULL) = (subject_id IS NULL))
);
CREATE UNIQUE INDEX razorpay_orders_order_id
    ON payments.razorpay_orders (environment, order_id) WHERE order_id IS NOT NULL;

GRANT SELECT ON payments.razorpay_items, payments.razorpay_plans TO project_admin;

-- Orders are written as the caller (`payments/razorpay_service.py`); the owner updates them.
GRANT SELECT, INSERT ON payments.razorpay_orders TO anon, authenticated, project_admin;
ALTER TABLE payments.razorpay_orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY razorpay_orders_admin ON payments.razorpay_orders FOR ALL TO project_admin
    USING (true) WITH CHECK (true);
CREATE POLICY razorpay_orders_own_select ON payments.razorpay_orders FOR SELECT TO authenticated
    USING (created_by = (SELECT auth.uid())::text);
CREATE POLICY razorpay_orders_user_insert ON payments.razorpay_orders FOR INSERT TO authenticated
    WITH CHECK (
        created_by = (SELECT auth.uid())::text
        AND (subject_type IS NULL OR (subject_type = 'user' AND subject_id = (SELECT auth.uid())::text))
    );
CREATE POLICY razorpay_orders_anon_insert ON payments.razorpay_orders FOR INSERT TO anon
    WITH CHECK (created_by IS NULL AND subject_type IS NULL);

-- Which subscriptions a user may create or manage is asked of these policies (a probe insert or update,
-- rolled back), as InsForge does: by default the user's own subject; a project opens others with policies.
GRANT SELECT, INSERT ON payments.razorpay_subscriptions TO authenticated, project_admin;
GRANT UPDATE (updated_at) ON payments.razorpay_subscriptions TO authenticated;
GRANT UPDATE ON payments.razorpay_subscriptions TO project_admin;
ALTER TABLE payments.razorpay_subscriptions ENABLE ROW LEVEL SECURITY;
CREATE POLICY razorpay_subscriptions_admin ON payments.razorpay_subscriptions FOR ALL TO project_admin
    USING (true) WITH CHECK (true);
CREATE POLICY razorpay_subscriptions_own_select ON payments.razorpay_subscriptions FOR SELECT
    TO authenticated USING (subject_type = 'user' AND subject_id = (SELECT auth.uid())::text);
CREATE POLICY razorpay_subscriptions_own_insert ON payments.razorpay_subscriptions FOR INSERT
    TO authenticated WITH CHECK (subject_type = 'user' AND subject_id = (SELECT auth.uid())::text);
CREATE POLICY razorpay_subscriptions_own_update ON payments.razorpay_subscriptions FOR UPDATE
    TO authenticated USING (subject_type = 'user' AND subject_id = (SELECT auth.uid())::text)
    WITH CHECK (subject_type = 'user' AND subject_id = (SELECT auth.uid())::text);
