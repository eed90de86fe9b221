-- Jobs, their timelines and everything durable execution needs, for PostgreSQL.
-- Times are epoch seconds (double precision, UTC), as on SQLite; JSON payloads
-- are stored as text, written and read by Instar only.
CREATE TABLE jobs (
    id               bigserial PRIMARY KEY,
    name             text             NOT NULL,
    queue            text             NOT NULL,
    state            text             NOT NULL,
    priority         integer          NOT NULL DEFAULT 0,
    attempt          integer          NOT NULL DEFAULT 0,
    max_attempts     integer          NOT NULL,
    args             text             NOT NULL,
    result           text,
    error            text,
    key              text,
    run_at           double precision,
    next_retry_at    double precision,
    created_at       double precision NOT NULL,
    updated_at       double precision NOT NULL,
    worker           text,
    lease_token      text,
    lease_expires_at double precision,
    lease_seconds    double precision NOT NULL,
    cancel_requested boolean          NOT NULL DEFAULT false,
    progress         text,
    version          integer          NOT NULL DEFAULT 0,
    checkpoint       text,
    pause_requested  boolean          NOT NULL DEFAULT false,
    wake_at          double precision,
    pause_deadline   double precision,
    pause_timeout    double precision NOT NULL DEFAULT 86400,
    parent_id        bigint
);

-- Idempotent enqueue: one job per key.
CREATE UNIQUE INDEX jobs_key ON jobs (key) WHERE key IS NOT NULL;
-- Claiming reads only ready jobs, however many finished ones pile up.
CREATE INDEX jobs_ready ON jobs (priority DESC, id) WHERE state = 'ready';
-- Each timer reads only the jobs that wait for it.
CREATE INDEX jobs_scheduled ON jobs (run_at) WHERE state = 'scheduled';
CREATE INDEX jobs_backing_off ON jobs (next_retry_at) WHERE state = 'backing-off';
CREATE INDEX jobs_suspended ON jobs (wake_at) WHERE state = 'suspended';
CREATE INDEX jobs_paused ON jobs (pause_deadline) WHERE state = 'paused';
CREATE INDEX jobs_pending ON jobs (id) WHERE state = 'pending';
-- The rescuer and heartbeats read only leased jobs.
CREATE INDEX jobs_leased ON jobs (lease_expires_at) WHERE state IN ('running', 'serving', 'stopping');
-- Listing by queue or name, newest first (no index on state alone: every
-- transition would rewrite it).
CREATE INDEX jobs_queue ON jobs (queue, id);
CREATE INDEX jobs_name ON jobs (name, id);
CREATE INDEX jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE events (
    id         bigserial PRIMARY KEY,
    job_id     bigint           NOT NULL,
    at         double precision NOT NULL,
    from_state text,
    to_state   text             NOT NULL,
    trigger    text             NOT NULL,
    attempt    integer          NOT NULL,
    worker     text,
    actor      text,
    detail     text
);
CREATE INDEX events_job ON events (job_id, id);

CREATE TABLE leaders (
    role       text PRIMARY KEY,
    holder     text             NOT NULL,
    expires_at double precision NOT NULL
);

CREATE TABLE steps (
    job_id bigint           NOT NULL,
    name   text             NOT NULL,
    result text,
    at     double precision NOT NULL,
    PRIMARY KEY (job_id, name)
);

CREATE TABLE awakeables (
    id          text PRIMARY KEY,
    job_id      bigint           NOT NULL,
    name        text             NOT NULL,
    state       text             NOT NULL DEFAULT 'pending',
    value       text,
    reason      text,
    timeout_at  double precision,
    created_at  double precision NOT NULL,
    resolved_at double precision,
    UNIQUE (job_id, name)
);

CREATE TABLE dependencies (
    job_id     bigint NOT NULL,
    depends_on bigint NOT NULL,
    kind       text   NOT NULL,
    PRIMARY KEY (job_id, depends_on, kind)
);
CREATE INDEX dependencies_on ON dependencies (depends_on);

CREATE TABLE paused_queues (
    queue     text PRIMARY KEY,
    paused_at double precision NOT NULL
);
