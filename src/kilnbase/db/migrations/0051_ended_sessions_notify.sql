-- Every process keeps a view of the sessions ended lately (`identity/ended_sessions.py`), so that an access
-- token of a signed-out, revoked or deleted session stops working everywhere within moments rather than at
-- its expiry. These triggers tell every listener which session family ended, when the change commits.
-- Rotating a refresh token sets only `used_at`, so the hot path fires neither trigger; identical payloads
-- within one transaction are delivered once.
CREATE FUNCTION auth.notify_session_ended() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
BEGIN
    PERFORM pg_notify('kilnbase_sessions_ended', OLD.family_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER sessions_revoked AFTER UPDATE OF revoked_at ON auth.sessions
FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
EXECUTE FUNCTION auth.notify_session_ended();

CREATE TRIGGER sessions_deleted AFTER DELETE ON auth.sessions
FOR EACH ROW WHEN (OLD.revoked_at IS NULL)
EXECUTE FUNCTION auth.notify_session_ended();

CREATE INDEX sessions_revoked_at_idx ON auth.sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- What a listener reads when it (re)connects: the families ended within the last `seconds` (the lifetime of
-- an access token), which is as far back as a token of theirs can still be unexpired.
CREATE FUNCTION auth.recently_ended_sessions(seconds integer) RETURNS SETOF text
LANGUAGE sql STABLE SET search_path = pg_catalog
AS $$
    SELECT DISTINCT family_id::text FROM auth.sessions
    WHERE revoked_at > now() - make_interval(secs => seconds)
$$;
REVOKE ALL ON FUNCTION auth.recently_ended_sessions(integer) FROM PUBLIC;
