-- A held `bulk-upsert` (an agent's upsert that rewrote every row of a table) keeps its rows, up to the 10 MB
-- body limit, in the change request's `content`. Lists, polls and decisions show them as a held upload's file
-- is shown (0202): by size and SHA-256, once, when the call is held; `GET /api/approvals/:id` shows them in
-- full. Listed whole, 200 such requests made a list of up to 2 GB.
CREATE OR REPLACE FUNCTION system.held_file_summary(tool text, arguments jsonb) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog
AS $$
    SELECT CASE WHEN f.argument IS NOT NULL THEN jsonb_build_object('argument', f.argument,
        'bytes', octet_length(f.content), 'sha256', encode(sha256(f.content), 'hex')) END
    FROM (SELECT
        CASE WHEN tool = 'bulk-upsert' AND jsonb_typeof(arguments -> 'content') = 'string' THEN 'content'
            WHEN tool <> 'upload-object' THEN NULL
            WHEN jsonb_typeof(arguments -> 'base64Data') = 'string' THEN 'base64Data'
            WHEN jsonb_typeof(arguments -> 'text') = 'string' THEN 'text' END AS argument,
        CASE WHEN tool = 'bulk-upsert' THEN convert_to(arguments ->> 'content', 'UTF8')
            WHEN tool <> 'upload-object' THEN NULL
            WHEN arguments ->> 'base64Data' ~ '^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$'
                THEN decode(arguments ->> 'base64Data', 'base64')
            ELSE convert_to(arguments ->> 'text', 'UTF8') END AS content) AS f
$$;
REVOKE ALL ON FUNCTION system.held_file_summary(text, jsonb) FROM PUBLIC;

UPDATE system.change_requests SET file_summary = system.held_file_summary(tool, arguments)
WHERE tool = 'bulk-upsert';
