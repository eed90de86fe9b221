-- Retention: where the pruning scan resumes (a job id) and the largest event id
-- pruned so far (an event stream resumed from an older id may have missed
-- events: it is told so). One row; the pruning transaction locks it.
CREATE TABLE pruning (
    one            INTEGER PRIMARY KEY CHECK (one = 1),
    cursor_job     INTEGER NOT NULL,
    pruned_through INTEGER NOT NULL
);
INSERT INTO pruning VALUES (1, 0, 0);

-- Finished jobs pruned, so that the finished counts (entered - exited - pruned)
-- count the jobs that are still there.
ALTER TABLE state_totals ADD COLUMN pruned INTEGER NOT NULL DEFAULT 0;
