-- The jobs table holds the current state of every job; events is its
-- append-only timeline. Times are epoch seconds (REAL, UTC).
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    name             TEXT    NOT NULL,
    queue            TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    args             TEXT    NOT NULL,
    result           TEXT,
    error            TEXT,
    key              TEXT,
    run_at           REAL,
    next_retry_at    REAL,
    created_at       REAL    NOT NULL,
    updated_at       REAL    NOT NULL,
    worker           TEXT,
    lease_token      TEXT,
    lease_expires_at REAL,
    lease_seconds    REAL    NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress         TEXT,
    version          INTEGER NOT NULL DEFAULT 0
);

-- Idempotent enqueue: one job per key.
CREATE UNIQUE INDEX jobs_key ON jobs (key) WHERE key IS NOT NULL;
-- Claiming reads only ready jobs, however many finished ones pile up.
CREATE INDEX jobs_ready ON jobs (priority DESC, id) WHERE state = 'ready';
-- Timers read only the jobs that wait for a time.
CREATE INDEX jobs_scheduled ON jobs (run_at) WHERE state = 'scheduled';
CREATE INDEX jobs_backing_off ON jobs (next_retry_at) WHERE state = 'backing-off';
-- The rescuer and heartbeats read only leased jobs (few: at most the running ones).
CREATE INDEX jobs_leased ON jobs (lease_expires_at) WHERE state IN ('running', 'serving', 'stopping');
-- Listing by queue or name, newest first. There is deliberately no index on
-- state alone: every transition would rewrite it, which cost a third of the
-- hot path's time; listing by state scans newest first and stops at --limit.
CREATE INDEX jobs_queue ON jobs (queue, id);
CREATE INDEX jobs_name ON jobs (name, id);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY,
    job_id     INTEGER NOT NULL,
    at         REAL    NOT NULL,
    from_state TEXT,
    to_state   TEXT    NOT NULL,
    trigger    TEXT    NOT NULL,
    attempt    INTEGER NOT NULL,
    worker     TEXT,
    actor      TEXT,
    detail     TEXT
);
CREATE INDEX events_job ON events (job_id, id);

-- One row per maintenance role; whoever holds an unexpired row leads.
CREATE TABLE leaders (
    role       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at REAL NOT NULL
);
