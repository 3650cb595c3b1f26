-- Device authorization (InsForge's `auth.device_authorizations`, `/api/auth/device/...`): a CLI, an editor
-- plugin or a coding agent without a browser asks for a code pair, a signed-in user approves the short user
-- code elsewhere, and the device trades its long device code for a session (`auth/device_authorizations.py`).
--
-- Both codes are stored only as keyed hashes (HMAC-SHA256, hex): the table never holds what would let a
-- reader approve or redeem a code. The user who first signs in on the verification page, approves or is
-- bound to the code (`approved_by_user_id`) is the only one who may approve or deny it afterwards. Rows are
-- read and written by Kilnbase's own pool only: no request role has any right on the table.
CREATE TABLE auth.device_authorizations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    device_code_hash text NOT NULL UNIQUE,
    user_code_hash text NOT NULL UNIQUE,
    status text NOT NULL DEFAULT 'pending_authorization' CHECK (
        status IN ('pending_authorization', 'authenticated', 'approved', 'denied', 'expired', 'consumed')
    ),
    expires_at timestamptz NOT NULL,
    poll_interval_seconds integer NOT NULL DEFAULT 5 CHECK (poll_interval_seconds > 0),
    -- A deleted user's pending or approved codes go with them (InsForge sets NULL, which leaves an approved
    -- code without anyone to sign in as).
    approved_by_user_id uuid REFERENCES auth.users (id) ON DELETE CASCADE,
    consumed_at timestamptz,
    -- What the device said about itself ({deviceName, hostname, platform}), shown to the approving user.
    client_context jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON auth.device_authorizations FROM PUBLIC, anon, authenticated, project_admin;
ALTER TABLE auth.device_authorizations ENABLE ROW LEVEL SECURITY;

-- The prune (`DeviceAuthorizations.prune_expired`) and the binding's foreign key.
CREATE INDEX device_authorizations_expires_at_idx ON auth.device_authorizations (expires_at);
CREATE INDEX device_authorizations_approved_by_user_id_idx ON auth.device_authorizations (approved_by_user_id);

CREATE TRIGGER device_authorizations_updated_at BEFORE UPDATE ON auth.device_authorizations
FOR EACH ROW EXECUTE FUNCTION system.update_updated_at();
