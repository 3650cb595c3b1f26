-- Database change events: the publication the realtime change feed decodes (`realtime/change_feed.py`).
-- Every table in `public`, present and future, so nothing has to be done to a table to stream its changes;
-- created here, before any replication slot exists, so a slot made later decodes with it from its start.
-- Creating a publication for a whole schema needs a superuser: on a database where the owner is not one,
-- change events stay off (the server says so) until an operator runs this statement.
DO $$
BEGIN
    CREATE PUBLICATION kilnbase_realtime FOR TABLES IN SCHEMA public;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'change events need: CREATE PUBLICATION kilnbase_realtime FOR TABLES IN SCHEMA public';
END
$$;
