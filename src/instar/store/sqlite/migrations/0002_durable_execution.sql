-- Durable execution: checkpoints, stored step results, suspension timers,
-- awakeables, dependencies between jobs, paused queues, service jobs.
ALTER TABLE jobs ADD COLUMN checkpoint TEXT;
ALTER TABLE jobs ADD COLUMN pause_requested INTEGER NOT NULL DEFAULT 0;
-- When a suspended job wakes (durable sleep, signal timeout); NULL: only a signal or child wakes it.
ALTER TABLE jobs ADD COLUMN wake_at REAL;
-- When a paused job is cancelled if nobody resumes it.
ALTER TABLE jobs ADD COLUMN pause_deadline REAL;
ALTER TABLE jobs ADD COLUMN pause_timeout REAL NOT NULL DEFAULT 86400;
ALTER TABLE jobs ADD COLUMN parent_id INTEGER;

CREATE INDEX jobs_suspended ON jobs (wake_at) WHERE state = 'suspended';
CREATE INDEX jobs_paused ON jobs (pause_deadline) WHERE state = 'paused';
CREATE INDEX jobs_pending ON jobs (id) WHERE state = 'pending';
CREATE INDEX jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;

-- One stored result per (job, step name): a re-run returns it without running the step.
CREATE TABLE steps (
    job_id INTEGER NOT NULL,
    name   TEXT    NOT NULL,
    result TEXT,
    at     REAL    NOT NULL,
    PRIMARY KEY (job_id, name)
) WITHOUT ROWID;

-- An outside signal a job waits for; state moves once: pending -> resolved | rejected | timed-out.
CREATE TABLE awakeables (
    id          TEXT PRIMARY KEY,
    job_id      INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'pending',
    value       TEXT,
    reason      TEXT,
    timeout_at  REAL,
    created_at  REAL    NOT NULL,
    resolved_at REAL,
    UNIQUE (job_id, name)
);

-- Edges "job waits for depends_on": kind 'after' (a dependency given at enqueue,
-- the job is pending) or 'join' (a parent suspended until its children end).
CREATE TABLE dependencies (
    job_id     INTEGER NOT NULL,
    depends_on INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    PRIMARY KEY (job_id, depends_on, kind)
) WITHOUT ROWID;
CREATE INDEX dependencies_on ON dependencies (depends_on);

-- Nothing new is claimed from a paused queue.
CREATE TABLE paused_queues (
    queue     TEXT PRIMARY KEY,
    paused_at REAL NOT NULL
);
