-- Expired sessions are now deleted now and then (`SessionService.prune_expired`). Their deletion tells no
-- listener that a session ended: every token of an expired session has expired already, and a sweep of
-- thousands of rows would otherwise send thousands of notifications to every process.
DROP TRIGGER sessions_deleted ON auth.sessions;
CREATE TRIGGER sessions_deleted AFTER DELETE ON auth.sessions
FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND OLD.expires_at > now())
EXECUTE FUNCTION auth.notify_session_ended();

-- No index on expires_at: a refresh moves it, and an index on it would make every refresh's update write
-- index entries (today they are HOT updates); an hourly scan of the table costs far less.
