-- A run that ended without using up its attempt (paused, suspended, released)
-- leaves the attempt as it was and sets rerun: the next claim continues that
-- attempt instead of counting a new one. (The attempt used to be lowered instead,
-- so a paused job that had run showed attempt 0.)
ALTER TABLE jobs ADD COLUMN rerun INTEGER NOT NULL DEFAULT 0;
