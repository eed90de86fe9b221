-- How many jobs entered and left each finished state (completed, failed,
-- cancelled), by minute and queue, rolled up
-- from the timeline by the maintenance leader (one writer, once a pass: no row
-- that every transition would update). `state_totals` keeps the running sums
-- (entered - exited: the jobs in a state now, for the finished states), and
-- `rollups` the last event rolled up.
CREATE TABLE state_flows (
    minute  REAL    NOT NULL,
    queue   TEXT    NOT NULL,
    state   TEXT    NOT NULL,
    entered INTEGER NOT NULL,
    exited  INTEGER NOT NULL,
    PRIMARY KEY (minute, queue, state)
);

CREATE TABLE state_totals (
    queue   TEXT    NOT NULL,
    state   TEXT    NOT NULL,
    entered INTEGER NOT NULL,
    exited  INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
);

CREATE TABLE rollups (
    name     TEXT PRIMARY KEY,
    event_id INTEGER NOT NULL
);

-- Every live state has a partial index, so that counting it reads only its jobs.
CREATE INDEX jobs_orphaned ON jobs (id) WHERE state = 'orphaned';
