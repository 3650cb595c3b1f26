-- Database change events: the publication the realtime change feed decodes (`realtime/change_feed.py`).
-- Created empty, before any replication slot exists, so a slot made later decodes with it from its start.
-- A table joins it when someone first subscribes to its changes (and must have a primary key or a replica
-- identity then): a table in a publication that publishes updates and deletes refuses UPDATE and DELETE
-- without a replica identity, so no table the developer never asked to stream is put there.
CREATE PUBLICATION kilnbase_realtime;
