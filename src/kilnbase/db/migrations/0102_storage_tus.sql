-- Resumable uploads (TUS 1.0): one row per upload in progress; its bytes so far are a file on the server's
-- disk (the file's length is the upload's offset). The object appears, atomically with its row, only once
-- the last byte is in; an upload past its expiry is removed with its file.
CREATE TABLE storage.tus_uploads (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    bucket text NOT NULL REFERENCES storage.buckets (name) ON DELETE CASCADE,
    key text NOT NULL,
    length bigint NOT NULL CHECK (length >= 0),
    content_type text,
    uploaded_by text,
    created_by_admin boolean NOT NULL DEFAULT false,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON storage.tus_uploads FROM PUBLIC;
