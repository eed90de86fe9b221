-- Workers that run, or ran until lately: what each can run and when it was last
-- heard of (each heartbeat). `instar show` says when no live worker has a
-- job's handler; lease rescue forgets workers unseen for a day.
CREATE TABLE workers (
    id          TEXT PRIMARY KEY,
    host        TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    concurrency INTEGER NOT NULL,
    queues      TEXT,
    handlers    TEXT    NOT NULL,
    started_at  REAL    NOT NULL,
    seen_at     REAL    NOT NULL
);
