-- A held upload's file is summarised once, when the call is held, not on every listing.
--
-- A held `upload-object` (an agent's upload, or its `PUT .../objects/:key`, over an existing object) keeps its
-- file, up to 4 MB (5.6 MB as base64), in the change request's arguments. Lists, polls and decisions show it
-- by its size and SHA-256; computed as each request was read, every listing (up to 200 requests) decoded and
-- hashed each held file again. `file_summary` keeps that answer, written with the request.
--
-- The summary of a call: `{argument, bytes, sha256}` for `upload-object`'s `base64Data` (decoded when it is
-- base64, checked first, so that a malformed one gives null size and hash rather than an error) or `text`;
-- null for any other tool, or an upload with neither.
CREATE FUNCTION system.held_file_summary(tool text, arguments jsonb) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog
AS $$
    SELECT CASE WHEN f.argument IS NOT NULL THEN jsonb_build_object('argument', f.argument,
        'bytes', octet_length(f.content), 'sha256', encode(sha256(f.content), 'hex')) END
    FROM (SELECT
        CASE WHEN tool <> 'upload-object' THEN NULL
            WHEN jsonb_typeof(arguments -> 'base64Data') = 'string' THEN 'base64Data'
            WHEN jsonb_typeof(arguments -> 'text') = 'string' THEN 'text' END AS argument,
        CASE WHEN tool <> 'upload-object' THEN NULL
            WHEN arguments ->> 'base64Data' ~ '^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$'
                THEN decode(arguments ->> 'base64Data', 'base64')
            ELSE convert_to(arguments ->> 'text', 'UTF8') END AS content) AS f
$$;
REVOKE ALL ON FUNCTION system.held_file_summary(text, jsonb) FROM PUBLIC;

ALTER TABLE system.change_requests ADD COLUMN file_summary jsonb;
-- Requests held before: summarised here, once.
UPDATE system.change_requests SET file_summary = system.held_file_summary(tool, arguments)
WHERE tool = 'upload-object';
