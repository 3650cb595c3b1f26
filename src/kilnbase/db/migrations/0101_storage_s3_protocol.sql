-- The S3 protocol endpoint (/storage/v1/s3): access keys (the secret encrypted with the secret box, shown
-- once), and multipart uploads in progress with their parts (each part a blob of its own until the upload
-- completes or is aborted; a part's blob is queued for removal when its row goes).

CREATE TABLE storage.s3_access_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    access_key_id text NOT NULL UNIQUE,
    secret_access_key_encrypted text NOT NULL,
    description text,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);
REVOKE ALL ON storage.s3_access_keys FROM PUBLIC;

CREATE TABLE storage.s3_multipart_uploads (
    upload_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    bucket text NOT NULL REFERENCES storage.buckets (name) ON DELETE CASCADE,
    key text NOT NULL,
    content_type text,
    access_key_id text,
    created_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON storage.s3_multipart_uploads FROM PUBLIC;

CREATE TABLE storage.s3_multipart_parts (
    upload_id uuid NOT NULL REFERENCES storage.s3_multipart_uploads (upload_id) ON DELETE CASCADE,
    part_number integer NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
    blob_id uuid NOT NULL UNIQUE,
    bucket text NOT NULL,
    size bigint NOT NULL,
    etag text NOT NULL,
    uploaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (upload_id, part_number)
);
REVOKE ALL ON storage.s3_multipart_parts FROM PUBLIC;

-- The same trigger function as objects' (0100): a part's replaced or deleted blob is queued for removal.
CREATE TRIGGER parts_queue_old_blob AFTER UPDATE OR DELETE ON storage.s3_multipart_parts
    FOR EACH ROW EXECUTE FUNCTION storage.queue_old_blob();
