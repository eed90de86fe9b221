-- How many jobs entered and left each finished state (completed, failed,
-- cancelled), by minute and queue, rolled up
-- from the timeline by the maintenance leader (one writer, once a pass: no row
-- that every transition would update). `state_totals` keeps the running sums
-- (entered - exited: the jobs in a state now, for the finished states), and
-- `rollups` the last event rolled up.
CREATE TABLE state_flows (
    minute  double precision NOT NULL,
    queue   text NOT NULL,
    state   text NOT NULL,
    entered bigint NOT NULL,
    exited  bigint NOT NULL,
    PRIMARY KEY (minute, queue, state)
);

CREATE TABLE state_totals (
    queue   text NOT NULL,
    state   text NOT NULL,
    entered bigint NOT NULL,
    exited  bigint NOT NULL,
    PRIMARY KEY (queue, state)
);

CREATE TABLE rollups (
    name     text PRIMARY KEY,
    event_id bigint NOT NULL
);

-- Every live state has a partial index, so that counting it reads only its jobs.
CREATE INDEX jobs_orphaned ON jobs (id) WHERE state = 'orphaned';
