-- A resumable (TUS) upload is continued by the kind of caller that created it, anon included.
--
-- Until now an upload was its creator's by the token's `sub` (or by the admin flag), so one made with the
-- anon key, which has no `sub`, could be created where a policy lets anon write, and then neither
-- continued, nor finished, nor abandoned. The rule is now one SQL predicate, decided in the database from
-- the request's own role and claims, for every step after the creation: the caller's role must be the
-- creator's, and a user must be the same user (`sub`, null for the anon key); any admin credential may
-- continue an admin's upload, as any may write every object. For anon, the upload's URL (a random UUID) is
-- all that sets one anon client's upload apart from another's, as with tusd and Supabase Storage (whose HEAD
-- asks for no credential at all); a user's upload is never anon's or another user's, nor the reverse.
--
-- The request roles still have no rights on storage.tus_uploads: they read their own upload through
-- storage.callers_tus_upload and mark it finished through storage.finish_tus_upload, both SECURITY DEFINER
-- with a fixed search_path, both applying storage.tus_upload_is_callers.
ALTER TABLE storage.tus_uploads ADD COLUMN created_by_role text;
-- Rows from before: an admin's, a user's (they had a `sub`), or anon's (which nobody could continue).
UPDATE storage.tus_uploads SET created_by_role = CASE
    WHEN created_by_admin THEN 'project_admin'
    WHEN uploaded_by IS NOT NULL THEN 'authenticated'
    ELSE 'anon'
END;
ALTER TABLE storage.tus_uploads
    ALTER COLUMN created_by_role SET NOT NULL,
    ADD CONSTRAINT tus_uploads_created_by_role_check
        CHECK (created_by_role IN ('anon', 'authenticated', 'project_admin'));

-- Did the caller (this transaction's role and JWT claims, as the request set them) create the upload?
-- Only for the SECURITY DEFINER functions below: no request role may call it.
CREATE FUNCTION storage.tus_upload_is_callers(created_by_role text, uploaded_by text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog
AS $$
    SELECT created_by_role = current_setting('role')
       AND (created_by_role = 'project_admin'
            OR uploaded_by IS NOT DISTINCT FROM nullif(auth.jwt() ->> 'sub', ''))
$$;
REVOKE ALL ON FUNCTION storage.tus_upload_is_callers(text, text) FROM PUBLIC;

-- The caller's upload `upload_id` in `bucket_name` (expired or finished too: the caller is told so); no row
-- when there is none, or it is not the caller's.
CREATE FUNCTION storage.callers_tus_upload(upload_id uuid, bucket_name text)
RETURNS TABLE (
    id uuid, bucket text, key text, length bigint, content_type text, expires_at timestamptz,
    finished_at timestamptz
)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
AS $$
    SELECT u.id, u.bucket, u.key, u.length, u.content_type, u.expires_at, u.finished_at
    FROM storage.tus_uploads AS u
    WHERE u.id = $1 AND u.bucket = $2 AND storage.tus_upload_is_callers(u.created_by_role, u.uploaded_by)
$$;
REVOKE ALL ON FUNCTION storage.callers_tus_upload(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION storage.callers_tus_upload(uuid, text) TO anon, authenticated, project_admin;

CREATE OR REPLACE FUNCTION storage.finish_tus_upload(upload_id uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
BEGIN
    UPDATE storage.tus_uploads AS u SET finished_at = now()
    WHERE u.id = upload_id AND u.finished_at IS NULL
      AND storage.tus_upload_is_callers(u.created_by_role, u.uploaded_by);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'upload % is finished, abandoned or not yours', upload_id USING ERRCODE = 'no_data_found';
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION storage.finish_tus_upload(uuid) TO anon;

-- The role says it all now (one rule, one column).
ALTER TABLE storage.tus_uploads DROP COLUMN created_by_admin;
