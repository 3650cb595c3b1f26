-- The project's encryption key, checked at every start (`server/encryption_key_check.py`): one value sealed
-- with the key when the check was first made. A start whose key cannot open it is refused, rather than
-- serving with a key under which nothing sealed before (secrets, provider keys, OAuth and webhook secrets,
-- rotated project keys, encrypted columns) can be read. Kilnbase's owner alone reads it.
CREATE TABLE system.encryption_key_check (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    sealed text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
