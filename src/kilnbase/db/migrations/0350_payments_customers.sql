-- The payment providers' customers (InsForge's `payments.customers`, its migrations 040 and 049), for the
-- admin's customers list (`GET /api/payments/{stripe,razorpay}/:environment/customers`). The tables of 0310
-- and 0330 know a customer only by id (mappings, history rows, subscriptions); InsForge's list also shows
-- its email, name, phone, metadata, whether the provider deleted it, and its card and country (read from
-- `raw`). Rows come from each provider's sync (both) and Stripe's `customer.*` webhook events.
CREATE TABLE payments.customers (
    provider text NOT NULL CHECK (provider IN ('stripe', 'razorpay')),
    environment text NOT NULL CHECK (environment IN ('test', 'live')),
    provider_customer_id text NOT NULL,
    email text,
    name text,
    phone text,
    deleted boolean NOT NULL DEFAULT false,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    raw jsonb NOT NULL DEFAULT '{}'::jsonb,
    provider_created_at timestamptz,
    synced_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, environment, provider_customer_id)
);
CREATE INDEX customers_email ON payments.customers (provider, environment, lower(email))
    WHERE email IS NOT NULL;
-- The list's totals read the history by customer, and by email for a payment that names no customer.
CREATE INDEX transactions_customer ON payments.transactions (provider, environment, provider_customer_id);

GRANT SELECT ON payments.customers TO project_admin;
