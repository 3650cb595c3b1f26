-- A session (a family of refresh tokens) becomes one row whose tokens are numbered: rotating a refresh token
-- bumps `generation` in place instead of inserting a row per token (`auth/sessions.py`). The update changes no
-- indexed column, so Postgres can make it a HOT update (no index entry written); the fill factor leaves room
-- on each page for that. Rows from before (one per token, `token_hash` set, `generation` null) stay readable
-- and are continued as numbered rows on their next rotation.
ALTER TABLE auth.sessions ADD COLUMN generation integer;
ALTER TABLE auth.sessions ALTER COLUMN token_hash DROP NOT NULL;
ALTER TABLE auth.sessions ADD CONSTRAINT sessions_numbered_or_hashed
    CHECK ((token_hash IS NULL) = (generation IS NOT NULL));
CREATE UNIQUE INDEX sessions_family_row_idx ON auth.sessions (family_id) WHERE token_hash IS NULL;
ALTER TABLE auth.sessions SET (fillfactor = 80);
