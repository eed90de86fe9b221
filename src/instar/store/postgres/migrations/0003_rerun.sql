-- A run that ended without using up its attempt (paused, suspended, released)
-- leaves the attempt as it was and sets rerun: the next claim continues that
-- attempt instead of counting a new one.
ALTER TABLE jobs ADD COLUMN rerun boolean NOT NULL DEFAULT false;
