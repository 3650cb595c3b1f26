-- A resumable (TUS) upload becomes its object at most once, whenever the server dies.
--
-- The object's row is written as the caller (RLS decides), and the same transaction marks the upload
-- finished through storage.finish_tus_upload: the object and the mark commit together or not at all. A
-- second finish of the same upload (a client's HEAD after a crash, another process) finds the mark, fails,
-- and so undoes its own write; two at once queue on the row's lock, and the second then finds the mark. The
-- finished row stays until it expires, so that a HEAD (a client that missed the last answer, or resumes
-- after a crash) is answered that the upload is complete.
--
-- The request roles get no rights on storage.tus_uploads: the function only marks an unfinished upload the
-- caller created (the rule that TUS HEAD, PATCH and DELETE already apply), and does nothing else.
-- Rows from before this migration are unfinished, as they were.
ALTER TABLE storage.tus_uploads ADD COLUMN finished_at timestamptz;
-- A finished upload's row stays until it expires (a client that missed the last answer asks again), so the
-- expired ones are removed as uploads are created, not only at start: by this index.
CREATE INDEX tus_uploads_expires_at ON storage.tus_uploads (expires_at);

CREATE FUNCTION storage.finish_tus_upload(upload_id uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
BEGIN
    UPDATE storage.tus_uploads AS u SET finished_at = now()
    WHERE u.id = upload_id AND u.finished_at IS NULL
      AND (u.uploaded_by = nullif(auth.jwt() ->> 'sub', '')
           OR (u.created_by_admin AND current_setting('role') = 'project_admin'));
    IF NOT FOUND THEN
        RAISE EXCEPTION 'upload % is finished, abandoned or not yours', upload_id USING ERRCODE = 'no_data_found';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION storage.finish_tus_upload(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION storage.finish_tus_upload(uuid) TO authenticated, project_admin;
