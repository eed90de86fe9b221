-- Periodic jobs: each schedule's expression and zone as last seen in code,
-- whether it is paused (every worker reads it here), the last slot handled and
-- the last job made (epoch seconds, job id), and when a leading worker last
-- had it in code (a schedule gone from the code is reported as stale).
CREATE TABLE schedules (
    name        TEXT PRIMARY KEY,
    expression  TEXT NOT NULL,
    tz          TEXT NOT NULL,
    paused      INTEGER NOT NULL DEFAULT 0,
    last_slot   REAL NOT NULL,
    last_job_id INTEGER,
    seen_at     REAL NOT NULL
);
