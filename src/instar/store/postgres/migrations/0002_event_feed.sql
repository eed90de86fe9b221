-- The event feed reads the timeline in commit order. Event ids come from a
-- sequence, and a transaction may commit an event with a smaller id after
-- another has committed a larger one; so each event records the transaction
-- that wrote it, and the feed reads by (tx, id) below the oldest transaction
-- still running (see events_since in queries.sql).
ALTER TABLE events ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX events_feed ON events (tx, id);
