-- Durable machines (instar.machines): user-defined lifecycles beside the jobs.

-- Each (name, version) once: the definition's raw form (JSON) and its digest.
CREATE TABLE machine_definitions (
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    body       TEXT NOT NULL,
    digest     TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (name, version)
);

-- One row per instance: its active leaf state, context (JSON) and the seq of
-- its last history entry.
CREATE TABLE machine_instances (
    machine    TEXT NOT NULL,
    key        TEXT NOT NULL,
    version    INTEGER NOT NULL,
    state      TEXT COLLATE "C" NOT NULL,
    context    TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    final      BOOLEAN NOT NULL DEFAULT false,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (machine, key)
);
-- Instances by state (a superstate is a range of paths: 'a' and 'a.' up to 'a/',
-- in byte order: the column's collation is C).
CREATE INDEX machine_instances_by_state ON machine_instances (machine, state, key);

-- The record: every accepted event, timer, creation and rollback, with the
-- state and context it left (kind: created, event, timer, rolled_back, migrated).
CREATE TABLE machine_history (
    machine    TEXT NOT NULL,
    key        TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    at         DOUBLE PRECISION NOT NULL,
    kind       TEXT NOT NULL,
    event      TEXT,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    data       TEXT,
    context    TEXT NOT NULL,
    actor      TEXT,
    transition INTEGER,
    version    INTEGER NOT NULL,
    detail     TEXT,
    PRIMARY KEY (machine, key, seq)
);
CREATE INDEX machine_history_by_time ON machine_history (machine, at);

-- Armed `after` timers: one row per (instance, state, timer), deleted when it
-- fires or its state is left.
CREATE TABLE machine_timers (
    id      BIGSERIAL PRIMARY KEY,
    machine TEXT NOT NULL,
    key     TEXT NOT NULL,
    state   TEXT NOT NULL,
    event   TEXT NOT NULL,
    due_at  DOUBLE PRECISION NOT NULL,
    seq     INTEGER NOT NULL
);
CREATE INDEX machine_timers_due ON machine_timers (due_at);
CREATE INDEX machine_timers_of_instance ON machine_timers (machine, key);

-- Refused events, a bounded log per instance (never in the history).
CREATE TABLE machine_refusals (
    id      BIGSERIAL PRIMARY KEY,
    machine TEXT NOT NULL,
    key     TEXT NOT NULL,
    at      DOUBLE PRECISION NOT NULL,
    event   TEXT NOT NULL,
    state   TEXT,
    reason  TEXT NOT NULL,
    detail  TEXT,
    actor   TEXT
);
CREATE INDEX machine_refusals_of_instance ON machine_refusals (machine, key, id);

-- The first outcome of each idempotency key, returned to a repeated send.
CREATE TABLE machine_sends (
    machine         TEXT NOT NULL,
    key             TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    at              DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (machine, key, idempotency_key)
);

-- Jobs an entry or exit action enqueued with a reply: the event their result
-- becomes, sent in the job's completion transaction.
CREATE TABLE machine_replies (
    job_id  BIGINT PRIMARY KEY,
    machine TEXT NOT NULL,
    key     TEXT NOT NULL,
    event   TEXT NOT NULL
);

-- History retention per machine: keep the last N entries of each instance
-- and/or entries younger than D days (the oldest kept entry is the snapshot).
CREATE TABLE machine_retention (
    machine   TEXT PRIMARY KEY,
    keep_last INTEGER,
    keep_days DOUBLE PRECISION
);
