-- Storage: buckets, objects and their metadata, as InsForge keeps them (schema `storage`).
--
-- Access to objects is decided by Row Level Security on storage.objects, for every operation, running as the
-- caller: owner policies by default (`uploaded_by = auth.jwt()->>'sub'`), project_admin sees and changes
-- everything (the admin bypass, through a policy: the role itself has no BYPASSRLS). Buckets are managed by
-- Kilnbase on the owner pool; request roles may read them (policies name buckets).
--
-- An object's bytes are a blob named by `blob_id` (the local backend's file name, or the key under the S3
-- store's prefix); replacing or deleting an object queues its old blob in storage.blob_garbage inside the
-- same transaction, so a blob is removed exactly when the row that used it is gone, even across a crash.

CREATE SCHEMA IF NOT EXISTS storage;
REVOKE ALL ON SCHEMA storage FROM PUBLIC;
GRANT USAGE ON SCHEMA storage TO anon, authenticated, project_admin;

CREATE TABLE storage.buckets (
    name text PRIMARY KEY CHECK (name ~ '^[a-zA-Z0-9_-]{1,63}$'),
    public boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON storage.buckets TO anon, authenticated, project_admin;

CREATE TABLE storage.objects (
    bucket text NOT NULL REFERENCES storage.buckets (name) ON DELETE CASCADE,
    key text NOT NULL,
    size bigint NOT NULL CHECK (size >= 0),
    mime_type text,
    etag text,
    blob_id uuid NOT NULL DEFAULT gen_random_uuid(),
    uploaded_at timestamptz NOT NULL DEFAULT now(),
    uploaded_by text DEFAULT nullif(auth.jwt() ->> 'sub', ''),
    uploaded_via text NOT NULL DEFAULT 'rest' CHECK (uploaded_via IN ('rest', 's3', 'dashboard', 'tus')),
    PRIMARY KEY (bucket, key)
);
CREATE UNIQUE INDEX objects_blob_id_idx ON storage.objects (blob_id);
CREATE INDEX objects_uploaded_by_idx ON storage.objects (uploaded_by);
CREATE INDEX objects_key_pattern_idx ON storage.objects (bucket, key text_pattern_ops);

ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE, DELETE ON storage.objects TO anon, authenticated, project_admin;

CREATE POLICY project_admin_policy ON storage.objects AS PERMISSIVE FOR ALL TO project_admin
    USING (true) WITH CHECK (true);
CREATE POLICY storage_objects_owner_select ON storage.objects FOR SELECT TO authenticated
    USING (uploaded_by = (SELECT auth.jwt() ->> 'sub'));
CREATE POLICY storage_objects_owner_insert ON storage.objects FOR INSERT TO authenticated
    WITH CHECK (uploaded_by = (SELECT auth.jwt() ->> 'sub'));
CREATE POLICY storage_objects_owner_update ON storage.objects FOR UPDATE TO authenticated
    USING (uploaded_by = (SELECT auth.jwt() ->> 'sub'))
    WITH CHECK (uploaded_by = (SELECT auth.jwt() ->> 'sub'));
CREATE POLICY storage_objects_owner_delete ON storage.objects FOR DELETE TO authenticated
    USING (uploaded_by = (SELECT auth.jwt() ->> 'sub'));

-- Blobs to remove once the transaction that stopped using them commits (written by a trigger, so no path
-- that replaces or deletes a row can forget it; read and emptied by Kilnbase on the owner pool).
CREATE TABLE storage.blob_garbage (
    blob_id uuid PRIMARY KEY,
    bucket text NOT NULL,
    queued_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON storage.blob_garbage FROM PUBLIC;

CREATE OR REPLACE FUNCTION storage.queue_old_blob() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
BEGIN
    IF TG_OP = 'DELETE' OR OLD.blob_id IS DISTINCT FROM NEW.blob_id THEN
        INSERT INTO storage.blob_garbage (blob_id, bucket) VALUES (OLD.blob_id, OLD.bucket)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION storage.queue_old_blob() FROM PUBLIC;

CREATE TRIGGER objects_queue_old_blob AFTER UPDATE OR DELETE ON storage.objects
    FOR EACH ROW EXECUTE FUNCTION storage.queue_old_blob();

-- The storage configuration: one row (InsForge's `storage.config`).
CREATE TABLE storage.config (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    max_file_size_mb integer CHECK (max_file_size_mb BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON storage.config FROM PUBLIC;

-- Path helpers for policies: storage.foldername('a/b/c.txt') = {a,b}; filename = 'c.txt'; extension = 'txt'.
CREATE OR REPLACE FUNCTION storage.foldername(name text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (string_to_array(name, '/'))[1 : cardinality(string_to_array(name, '/')) - 1]
$$;

CREATE OR REPLACE FUNCTION storage.filename(name text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (string_to_array(name, '/'))[cardinality(string_to_array(name, '/'))]
$$;

CREATE OR REPLACE FUNCTION storage.extension(name text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (regexp_match(name, '\.([^./\\]+)$'))[1]
$$;

GRANT EXECUTE ON FUNCTION storage.foldername(text), storage.filename(text), storage.extension(text)
    TO anon, authenticated, project_admin;

-- Blobs being written to an object store that has no rename (S3): each is journalled here before its first
-- byte is sent, and removed once its row commits or the upload is abandoned. A blob whose writer died (its
-- process no longer holds the advisory lock `instance`) or whose presigned upload expired unconfirmed is
-- deleted from the store by the sweep at start, so a crash leaves no orphan object behind.
CREATE TABLE storage.pending_blobs (
    blob_id uuid PRIMARY KEY,
    bucket text NOT NULL,
    key text,
    instance bigint,
    uploaded_by text,
    expires_at timestamptz,
    started_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON storage.pending_blobs FROM PUBLIC;
