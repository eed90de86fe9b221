-- Flow control (instar.registry.flow). Each job's keys, filled from its arguments at
-- enqueue (its name where the limit has no key): what its concurrency limit
-- counts by and what its rate spaces its starts by (NULL: no such limit, or a
-- job enqueued by code without it, which a limit counts under its name).
ALTER TABLE jobs ADD COLUMN limit_key text;
ALTER TABLE jobs ADD COLUMN rate_key text;

-- The ready jobs of each rate key: whether a rate holds any job back (a
-- worker waits for a rate's next start only then).
CREATE INDEX jobs_ready_by_rate ON jobs (rate_key) WHERE state = 'ready' AND rate_key IS NOT NULL;

-- For each rate ('queue' and a queue name, or 'key' and a job's rate key): the
-- time (epoch seconds) from which it may start its next job. A row whose time
-- has passed says nothing more than no row, and maintenance deletes it.
CREATE TABLE rate_limits (
    kind       text NOT NULL,
    key        text NOT NULL,
    next_start double precision NOT NULL,
    PRIMARY KEY (kind, key)
);

-- The limits workers run with, as last declared in code ('queue' or 'job' and
-- its name; the key template, if any; seen_at in epoch seconds): what
-- instar queues shows beside the jobs that run and wait under each.
CREATE TABLE flow_limits (
    kind        text NOT NULL,
    name        text NOT NULL,
    concurrency integer,
    key         text,
    rate_count  integer,
    rate_per    double precision,
    rate_key    text,
    seen_at     double precision NOT NULL,
    PRIMARY KEY (kind, name)
);
