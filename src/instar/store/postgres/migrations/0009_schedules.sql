-- Periodic jobs: each schedule's expression and zone as last seen in code,
-- whether it is paused (every worker reads it here), the last slot handled and
-- the last job made (epoch seconds, job id), and when a leading worker last
-- had it in code (a schedule gone from the code is reported as stale).
CREATE TABLE schedules (
    name        text PRIMARY KEY,
    expression  text NOT NULL,
    tz          text NOT NULL,
    paused      boolean NOT NULL DEFAULT false,
    last_slot   double precision NOT NULL,
    last_job_id bigint,
    seen_at     double precision NOT NULL
);
