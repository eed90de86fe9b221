-- Workers that run, or ran until lately: what each can run and when it was last
-- heard of (each heartbeat).
CREATE TABLE workers (
    id          text PRIMARY KEY,
    host        text             NOT NULL,
    pid         integer          NOT NULL,
    concurrency integer          NOT NULL,
    queues      text,
    handlers    text             NOT NULL,
    started_at  double precision NOT NULL,
    seen_at     double precision NOT NULL
);
