-- Named queries of the PostgreSQL store. Placeholders are filled from the
-- lifecycle table when the file is loaded: {leased}, {terminal} (every state of
-- a kind), {claim_from}, {claim_to} (the claim's two ends), {state:NAME} (one
-- checked state); {schema} and {channel} are identifiers filled in at run time.

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema}

-- name: migration_lock
-- Several processes may start at once: one migrates, the others wait, then find it done.
SELECT pg_advisory_xact_lock(hashtext('instar-migrate'))

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY, name text NOT NULL, applied_at double precision NOT NULL)

-- name: migrations_table_exists
-- In the schema search_path points at: Instar's own.
SELECT to_regclass('schema_migrations') IS NOT NULL

-- name: schema_version
SELECT max(version) FROM schema_migrations

-- name: applied_migrations
SELECT version FROM schema_migrations

-- name: record_migration
INSERT INTO schema_migrations (version, name, applied_at)
VALUES (%(version)s, %(name)s, extract(epoch FROM clock_timestamp()))

-- name: insert_job
-- One job, with its key's idempotency; the caller reads the existing job when skipped.
INSERT INTO jobs (name, queue, state, priority, max_attempts, args, key, run_at,
                  lease_seconds, pause_timeout, parent_id, created_at, updated_at,
                  limit_key, rate_key, trace_context)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING
RETURNING id

-- name: enqueue_one
-- One job, its first event and the wake-up in one statement (run in autocommit:
-- one round trip). No row when the key exists already: nothing is written.
WITH job AS (
    INSERT INTO jobs (name, queue, state, priority, max_attempts, args, key, run_at,
                      lease_seconds, pause_timeout, parent_id, created_at, updated_at,
                      limit_key, rate_key, trace_context)
    VALUES (%(name)s, %(queue)s, %(state)s, %(priority)s, %(max_attempts)s, %(args)s, %(key)s,
            %(run_at)s, %(lease_seconds)s, %(pause_timeout)s, %(parent_id)s, %(now)s, %(now)s,
            %(limit_key)s, %(rate_key)s, %(trace_context)s)
    ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING
    RETURNING id, state
), event AS (
    INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt, worker, actor, detail)
    SELECT id, %(now)s, NULL, state, %(trigger)s, 0, NULL, %(actor)s, NULL FROM job
)
SELECT id, pg_notify(%(channel)s, %(payload)s) FROM job

-- name: insert_jobs_bulk
-- Many jobs without keys and their first events in one statement, the columns
-- as arrays in binary; WITH ORDINALITY keeps the ids in the caller's order.
WITH input AS (
    SELECT * FROM unnest(
        %(name)b::text[], %(queue)b::text[], %(state)b::text[], %(priority)b::integer[],
        %(max_attempts)b::integer[], %(args)b::text[], %(run_at)b::double precision[],
        %(lease_seconds)b::double precision[], %(pause_timeout)b::double precision[],
        %(parent_id)b::bigint[], %(limit_key)b::text[], %(rate_key)b::text[],
        %(trace_context)b::text[]
    ) WITH ORDINALITY AS t(name, queue, state, priority, max_attempts, args, run_at,
                           lease_seconds, pause_timeout, parent_id, limit_key, rate_key,
                           trace_context, n)
), inserted AS (
    INSERT INTO jobs (name, queue, state, priority, max_attempts, args, run_at,
                      lease_seconds, pause_timeout, parent_id, created_at, updated_at,
                      limit_key, rate_key, trace_context)
    SELECT name, queue, state, priority, max_attempts, args, run_at,
           lease_seconds, pause_timeout, parent_id, %(now)s, %(now)s, limit_key, rate_key,
           trace_context
    FROM input ORDER BY n
    RETURNING id, state
), event AS (
    INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt, worker, actor, detail)
    SELECT id, %(now)s, NULL, state, %(trigger)s, 0, NULL, %(actor)s, NULL
    FROM inserted ORDER BY id
)
SELECT id FROM inserted ORDER BY id

-- name: reserve_job_ids
-- Ids for jobs about to be copied in, in increasing order (other sessions may
-- take ids in between: the ids are unique, not contiguous).
SELECT nextval('jobs_id_seq') AS id FROM generate_series(1, %(n)s) ORDER BY id

-- name: copy_jobs
-- Many jobs without keys, in binary, each with an id reserve_job_ids gave; the
-- other columns those of insert_job, in its order.
COPY jobs (id, name, queue, state, priority, max_attempts, args, key, run_at,
           lease_seconds, pause_timeout, parent_id, created_at, updated_at, limit_key,
           rate_key, trace_context)
FROM STDIN (FORMAT BINARY)

-- name: copy_enqueued_events
-- The first event of each job copy_jobs wrote, in binary.
COPY events (job_id, at, from_state, to_state, trigger, attempt, worker, actor, detail)
FROM STDIN (FORMAT BINARY)

-- name: insert_jobs_alike
-- Many jobs without keys alike but for their arguments (a JSON array of the
-- arguments' JSON texts) and their first events, in one statement: the shared
-- columns are sent once. The ids come back as one array, in the caller's order.
WITH inserted AS (
    INSERT INTO jobs (name, queue, state, priority, max_attempts, args, run_at,
                      lease_seconds, pause_timeout, parent_id, created_at, updated_at,
                      limit_key, rate_key, trace_context)
    SELECT %(name)s::text, %(queue)s::text, %(state)s::text, %(priority)s::integer,
           %(max_attempts)s::integer, t.args, %(run_at)s::double precision,
           %(lease_seconds)s::double precision, %(pause_timeout)s::double precision,
           %(parent_id)s::bigint, %(now)s::double precision, %(now)s::double precision,
           %(limit_key)s::text, %(rate_key)s::text, %(trace_context)s::text
    FROM json_array_elements_text(%(args)s::json) WITH ORDINALITY AS t(args, n)
    ORDER BY n
    RETURNING id, state
), event AS (
    INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt, worker, actor, detail)
    SELECT id, %(now)s::double precision, NULL, state, %(trigger)s::text, 0, NULL,
           %(actor)s::text, NULL
    FROM inserted ORDER BY id
)
SELECT array_agg(id ORDER BY id) FROM inserted

-- name: insert_enqueued_events
-- The first event of each new job, in one statement.
INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt, worker, actor, detail)
SELECT id, %(now)s, NULL, state, %(trigger)s, 0, NULL, %(actor)s, NULL
FROM jobs WHERE id = ANY(%(ids)s::bigint[])
ORDER BY id

-- name: job_by_key
SELECT id FROM jobs WHERE key = %s

-- name: get_job
SELECT * FROM jobs WHERE id = %s

-- name: jobs_in
SELECT * FROM jobs WHERE id = ANY(%s::bigint[])

-- name: list_jobs
SELECT * FROM jobs
WHERE (%(state)s::text IS NULL OR state = %(state)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(name)s::text IS NULL OR name = %(name)s::text
       OR right(name, length(%(name)s::text) + 1) = '.' || %(name)s::text)
  AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)
  AND (%(parent)s::bigint IS NULL OR parent_id = %(parent)s::bigint)
  AND (%(created_after)s::float8 IS NULL OR created_at > %(created_after)s::float8)
  AND (%(created_before)s::float8 IS NULL OR created_at < %(created_before)s::float8)
  AND (%(args_path)s::text[] IS NULL
       OR (args::jsonb #> %(args_path)s::text[])::text IN (%(args_text)s::text, %(args_literal)s::text))
ORDER BY id DESC
LIMIT %(limit)s

-- name: count_by_state
SELECT state, count(*) FROM jobs GROUP BY state

-- name: insert_move_events
-- The events of the moves that won (won), from the same JSON as move_batch
-- (columns 18-21: trigger, reporter, actor, detail), in the moves' order.
INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt, worker, actor, detail)
SELECT (e ->> 0)::bigint, %(now)s, e ->> 1, e ->> 2, e ->> 18, (e ->> 3)::integer,
       e ->> 19, e ->> 20, e ->> 21
FROM jsonb_array_elements(%(moves)s::jsonb) WITH ORDINALITY AS t(e, n)
WHERE (e ->> 0)::bigint = ANY(%(won)s::bigint[])
ORDER BY n

-- name: insert_refusals
-- A report from a worker whose lease token is stale (the move did not win and
-- carried a token): a note in the timeline, never applied.
INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt, worker, actor, detail)
SELECT j.id, %(now)s, j.state, j.state, %(refused)s, j.attempt, t.e ->> 19, t.e ->> 20,
       json_build_object('trigger', t.e ->> 18, 'refused', t.e ->> 2,
                         'reason', 'stale lease token')::text
FROM jsonb_array_elements(%(moves)s::jsonb) WITH ORDINALITY AS t(e, n)
JOIN jobs AS j ON j.id = (t.e ->> 0)::bigint
WHERE t.e ->> 13 IS NOT NULL AND NOT (j.id = ANY(%(won)s::bigint[]))
ORDER BY t.n

-- name: insert_claim_events
-- The claim's events, in the order the claim took the jobs.
INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt, worker, actor, detail)
SELECT id, %(now)s, {claim_from}, {claim_to}, %(trigger)s, attempt, worker, NULL, NULL
FROM jobs WHERE id = ANY(%(ids)s::bigint[])
ORDER BY priority DESC, id

-- name: insert_note
-- A note repeats the job's current state as both ends: it changes nothing.
INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt, worker, actor, detail)
SELECT id, %(now)s, state, state, %(trigger)s, attempt, %(worker)s, %(actor)s, %(detail)s
FROM jobs WHERE id = %(job_id)s

-- name: set_progress
UPDATE jobs SET progress = %(progress)s WHERE id = %(job_id)s

-- name: events_of_job
SELECT * FROM events WHERE job_id = %(job_id)s AND id > %(after)s ORDER BY id
LIMIT %(limit)s

-- name: events_since
-- The feed, in commit order. Ids come from a sequence, so a transaction that
-- began first may commit an event with a smaller id later: ordered by id alone,
-- a reader would skip it. Each event carries the id of the transaction that
-- wrote it (tx); the feed returns only events of transactions older than every
-- transaction still running (the snapshot's xmin), ordered by (tx, id), and
-- resumes after the (tx, id) of the event it was given. events_feed serves it.
WITH start AS (
    SELECT coalesce(
        (SELECT tx FROM events WHERE id = %(after)s),
        (SELECT min(tx) FROM events WHERE id > %(after)s),
        '0'::xid8) AS tx
)
SELECT e.id, e.job_id, e.at, e.from_state, e.to_state, e.trigger, e.attempt,
       e.worker, e.actor, e.detail
FROM events AS e, start
WHERE (e.tx, e.id) > (start.tx, %(after)s::bigint)
  AND e.tx < pg_snapshot_xmin(pg_current_snapshot())
  AND (%(state)s::text IS NULL OR e.to_state = %(state)s::text)
  AND (%(queue)s::text IS NULL AND %(name)s::text IS NULL
       OR EXISTS (SELECT 1 FROM jobs AS j WHERE j.id = e.job_id
                    AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
                    AND (%(name)s::text IS NULL OR j.name = %(name)s::text)))
ORDER BY e.tx, e.id
LIMIT %(limit)s

-- name: events_of_job_since
-- The feed of one job, through events_job (job_id, id), in the same order.
WITH start AS (
    SELECT coalesce(
        (SELECT tx FROM events WHERE id = %(after)s),
        (SELECT min(tx) FROM events WHERE id > %(after)s),
        '0'::xid8) AS tx
)
SELECT e.id, e.job_id, e.at, e.from_state, e.to_state, e.trigger, e.attempt,
       e.worker, e.actor, e.detail
FROM events AS e, start
WHERE e.job_id = %(job_id)s
  AND (e.tx, e.id) > (start.tx, %(after)s::bigint)
  AND e.tx < pg_snapshot_xmin(pg_current_snapshot())
  AND (%(state)s::text IS NULL OR e.to_state = %(state)s::text)
  AND (%(queue)s::text IS NULL AND %(name)s::text IS NULL
       OR EXISTS (SELECT 1 FROM jobs AS j WHERE j.id = e.job_id
                    AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
                    AND (%(name)s::text IS NULL OR j.name = %(name)s::text)))
ORDER BY e.tx, e.id
LIMIT %(limit)s

-- name: held_back_events
-- Committed events the feed cannot return yet: an older transaction is open.
SELECT EXISTS (SELECT 1 FROM events WHERE tx >= pg_snapshot_xmin(pg_current_snapshot()))

-- name: last_event_id
-- The last event the feed would return now.
SELECT id FROM events
WHERE tx < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY tx DESC, id DESC
LIMIT 1

-- name: move_batch
-- Many moves in one statement; each element of %(moves)s is a JSON array in the
-- order below. Compare-and-set on (id, state) plus the version or the lease
-- token the caller holds; RETURNING names the moves that won, and whether other
-- jobs wait on each (so the engine reads waiters only when there are some).
-- With %(alone)s, only moves of jobs nothing waits on (PostgresStore.apply_alone:
-- the others are left to a transaction), and none is awaited. A move that keeps
-- the lease never shortens it: it was planned from the job as its run knows it,
-- and heartbeats may have renewed the lease since (a service's ready after a
-- setup longer than its lease would write a lease already run out).
UPDATE jobs
SET state = m.to_state, version = jobs.version + 1, updated_at = %(now)s,
    attempt = m.attempt, max_attempts = m.max_attempts, run_at = m.run_at,
    next_retry_at = m.next_retry_at, worker = m.worker, lease_token = m.lease_token,
    lease_expires_at = CASE WHEN m.lease_expires_at IS NULL THEN NULL
                            ELSE greatest(m.lease_expires_at, jobs.lease_expires_at) END,
    result = m.result, error = m.error,
    wake_at = m.wake_at, pause_deadline = m.pause_deadline, rerun = m.rerun,
    progress = CASE WHEN m.clear_progress THEN NULL ELSE jobs.progress END,
    cancel_requested = CASE WHEN m.to_state = {claim_to} THEN false ELSE jobs.cancel_requested END,
    pause_requested = CASE WHEN m.to_state = {claim_to} THEN false ELSE jobs.pause_requested END
FROM (
    SELECT (e ->> 0)::bigint AS job_id, e ->> 1 AS from_state, e ->> 2 AS to_state,
           (e ->> 3)::integer AS attempt, (e ->> 4)::integer AS max_attempts,
           (e ->> 5)::double precision AS run_at, (e ->> 6)::double precision AS next_retry_at,
           e ->> 7 AS worker, e ->> 8 AS lease_token,
           (e ->> 9)::double precision AS lease_expires_at, e ->> 10 AS result, e ->> 11 AS error,
           (e ->> 12)::integer AS version, e ->> 13 AS guard_token,
           (e ->> 14)::double precision AS wake_at, (e ->> 15)::double precision AS pause_deadline,
           (e ->> 16)::boolean AS rerun, (e ->> 17)::boolean AS clear_progress
    FROM jsonb_array_elements(%(moves)s::jsonb) AS e
) AS m
WHERE jobs.id = m.job_id AND jobs.state = m.from_state
  AND (m.version IS NULL OR jobs.version = m.version)
  AND (m.guard_token IS NULL OR jobs.lease_token = m.guard_token)
  AND NOT (%(alone)s AND (EXISTS (SELECT 1 FROM dependencies AS d WHERE d.depends_on = jobs.id)
                          OR EXISTS (SELECT 1 FROM machine_replies AS r WHERE r.job_id = jobs.id)))
RETURNING jobs.id,
          NOT %(alone)s
          AND (EXISTS (SELECT 1 FROM dependencies AS d WHERE d.depends_on = jobs.id)
               OR EXISTS (SELECT 1 FROM machine_replies AS r WHERE r.job_id = jobs.id)) AS awaited

-- name: claim
-- SKIP LOCKED lets many workers claim side by side without waiting on each other.
-- The ids come first as an array (an InitPlan), then each row by its primary
-- key: the planner cannot turn the claim into a join over the whole table.
-- It runs between claim_plan and claim_plan_reset. Each job's lease token is
-- the claim's own random prefix and the job's id: no later claim of the job has
-- the same (md5 of random text per row cost 1.5-2 us a job, this 0.03).
UPDATE jobs
SET state = {claim_to}, attempt = attempt + CASE WHEN rerun THEN 0 ELSE 1 END, rerun = false,
    worker = %(worker)s,
    lease_token = %(token)s || '.' || id::text,
    lease_expires_at = %(now)s + lease_seconds,
    cancel_requested = false, pause_requested = false, version = version + 1, updated_at = %(now)s
WHERE id = ANY(ARRAY(SELECT id FROM jobs
                     WHERE state = {claim_from}
                       AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
                       AND (%(names)s::text[] IS NULL OR name = ANY(%(names)s::text[]))
                       AND queue NOT IN (SELECT queue FROM paused_queues)
                     ORDER BY priority DESC, id
                     LIMIT %(limit)s
                     FOR UPDATE SKIP LOCKED))
RETURNING *

-- name: move_alone_rest
-- Moves that set off nothing (no job waits on theirs), with nothing else to
-- write: their events and the wake-up in the same statement, run in autocommit
-- (one round trip), after move_batch (with %(alone)s) composed in front of it
-- as "moved" (PostgresStore.apply_alone). The events in the moves' order; the
-- wake-up only when a move won.
logged AS (
    INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt, worker, actor, detail)
    SELECT moved.id, %(now)s, e ->> 1, e ->> 2, e ->> 18, (e ->> 3)::integer,
           e ->> 19, e ->> 20, e ->> 21
    FROM jsonb_array_elements(%(moves)s::jsonb) WITH ORDINALITY AS t(e, n)
    JOIN moved ON moved.id = (e ->> 0)::bigint
    ORDER BY n
), woke AS (
    SELECT pg_notify(%(channel)s, %(payload)s) FROM (SELECT FROM moved LIMIT 1) AS any_moved
)
SELECT moved.id FROM moved, woke

-- name: claim_alone_rest
-- A claim with nothing else to write (no reports): its events and the wake-up
-- in the same statement, run in autocommit (one round trip), after the claim
-- composed in front of it as "claimed" (PostgresStore.claim_alone). The
-- session it runs in plans as claim_plan_generic does. The wake-up comes only
-- when a job was claimed.
logged AS (
    INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt, worker, actor, detail)
    SELECT id, %(now)s, {claim_from}, {claim_to}, %(trigger)s, attempt, worker, NULL, NULL
    FROM claimed ORDER BY priority DESC, id
), woke AS (
    SELECT pg_notify(%(channel)s, %(payload)s) FROM (SELECT FROM claimed LIMIT 1) AS any_claimed
)
SELECT claimed.* FROM claimed, woke

-- name: flow_candidates
-- The first part of a claim under flow control (instar.registry.flow), which
-- limit_locks or claim_limited completes: the ready jobs in order, but none
-- whose concurrency key or queue has as many leased jobs as its limit, nor any
-- whose rate may not start a job yet. %(jobs)s and %(queues)s map job names and
-- queues to {"max": .., "interval": ..}; with %(locked)s, only jobs whose
-- limits are all among these locks. A job stored without a key (enqueued by
-- code without the limit) counts under its name. The leased jobs are read
-- once (they are few: the jobs running now), then joined by key.
job_limits AS (
    SELECT key AS name, (value ->> 'max')::integer AS most,
           (value ->> 'interval')::double precision AS every
    FROM jsonb_each(%(jobs)s::jsonb)
), queue_limits AS (
    SELECT key AS queue, (value ->> 'max')::integer AS most,
           (value ->> 'interval')::double precision AS every
    FROM jsonb_each(%(queues)s::jsonb)
), leased AS (
    SELECT coalesce(limit_key, name) AS key, queue FROM jobs WHERE state IN ({leased})
), key_running AS (
    SELECT key, count(*) AS n FROM leased GROUP BY key
), queue_running AS (
    SELECT queue, count(*) AS n FROM leased GROUP BY queue
), candidates AS (
    SELECT j.id, j.priority, j.queue,
           CASE WHEN jl.most IS NOT NULL THEN coalesce(j.limit_key, j.name) END AS key,
           CASE WHEN jl.every IS NOT NULL THEN coalesce(j.rate_key, j.name) END AS rate_key,
           jl.most AS key_most, ql.most AS queue_most, ql.every AS queue_every,
           coalesce(kr.n, 0) AS key_running, coalesce(qr.n, 0) AS queue_running
    FROM jobs AS j
    LEFT JOIN job_limits AS jl ON jl.name = j.name
    LEFT JOIN queue_limits AS ql ON ql.queue = j.queue
    LEFT JOIN key_running AS kr
        ON jl.most IS NOT NULL AND kr.key = coalesce(j.limit_key, j.name)
    LEFT JOIN queue_running AS qr ON ql.most IS NOT NULL AND qr.queue = j.queue
    LEFT JOIN rate_limits AS rk
        ON jl.every IS NOT NULL AND rk.kind = 'key' AND rk.key = coalesce(j.rate_key, j.name)
    LEFT JOIN rate_limits AS rq ON ql.every IS NOT NULL AND rq.kind = 'queue' AND rq.key = j.queue
    WHERE j.state = {claim_from}
      AND (%(queues_filter)s::text[] IS NULL OR j.queue = ANY(%(queues_filter)s::text[]))
      AND (%(names)s::text[] IS NULL OR j.name = ANY(%(names)s::text[]))
      AND j.queue NOT IN (SELECT queue FROM paused_queues)
      AND (jl.most IS NULL OR coalesce(kr.n, 0) < jl.most)
      AND (ql.most IS NULL OR coalesce(qr.n, 0) < ql.most)
      AND (rk.next_start IS NULL OR rk.next_start <= %(now)s)
      AND (rq.next_start IS NULL OR rq.next_start <= %(now)s)
      AND (%(locked)s::text[] IS NULL OR (
            (jl.most IS NULL
             OR 'key:' || coalesce(j.limit_key, j.name) = ANY(%(locked)s::text[]))
            AND (jl.every IS NULL
                 OR 'rate:' || coalesce(j.rate_key, j.name) = ANY(%(locked)s::text[]))
            AND ((ql.most IS NULL AND ql.every IS NULL)
                 OR 'queue:' || j.queue = ANY(%(locked)s::text[]))))
    ORDER BY j.priority DESC, j.id
    LIMIT %(scan)s
    FOR UPDATE OF j SKIP LOCKED
)

-- name: limit_locks
-- After flow_candidates (without %(locked)s): the limits its jobs are under,
-- which the claim then locks (lock_limits) before it counts again.
SELECT DISTINCT lock FROM candidates AS c
CROSS JOIN LATERAL (VALUES
    ('key:' || c.key),
    ('rate:' || c.rate_key),
    (CASE WHEN c.queue_most IS NOT NULL OR c.queue_every IS NOT NULL THEN 'queue:' || c.queue END)
) AS v(lock)
WHERE lock IS NOT NULL
ORDER BY lock

-- name: lock_limits
-- Claims under the same limit take turns (a transaction lock per key, rate and
-- queue limit, taken in one order by all): each counts what the last one
-- committed. Claims under other limits, or none, never wait.
SELECT pg_advisory_xact_lock(1231975284, hashtext(current_schema() || ':' || name))
FROM unnest(%(locks)s::text[]) AS name

-- name: claim_limited
-- After flow_candidates (with %(locked)s, once lock_limits holds them): of
-- those, no more per key and per queue than the room left, and one per rate.
UPDATE jobs
SET state = {claim_to}, attempt = attempt + CASE WHEN rerun THEN 0 ELSE 1 END, rerun = false,
    worker = %(worker)s,
    lease_token = %(token)s || '.' || id::text,
    lease_expires_at = %(now)s + lease_seconds,
    cancel_requested = false, pause_requested = false, version = version + 1, updated_at = %(now)s
WHERE id = ANY(ARRAY(
    SELECT id FROM (
        SELECT c.*,
               row_number() OVER (PARTITION BY key ORDER BY priority DESC, id) AS key_rank,
               row_number() OVER (PARTITION BY queue ORDER BY priority DESC, id) AS queue_rank,
               row_number() OVER (PARTITION BY rate_key ORDER BY priority DESC, id) AS rate_rank
        FROM candidates AS c
    ) AS ranked
    WHERE (key IS NULL OR key_running + key_rank <= key_most)
      AND (queue_most IS NULL OR queue_running + queue_rank <= queue_most)
      AND (rate_key IS NULL OR rate_rank = 1)
      AND (queue_every IS NULL OR queue_rank = 1)
    ORDER BY priority DESC, id
    LIMIT %(limit)s))
RETURNING *

-- name: advance_rates
-- After a claim under rates: each rate's next start moves one interval on per
-- job it started, from now or from its next start if that is later (GCRA).
INSERT INTO rate_limits (kind, key, next_start)
SELECT s.kind, s.key, %(now)s + s.total
FROM (
    SELECT 'key' AS kind, coalesce(j.rate_key, j.name) AS key,
           sum((l.value ->> 'interval')::double precision) AS total
    FROM jobs AS j JOIN jsonb_each(%(jobs)s::jsonb) AS l ON l.key = j.name
    WHERE j.id = ANY(%(ids)s::bigint[]) AND l.value ->> 'interval' IS NOT NULL
    GROUP BY coalesce(j.rate_key, j.name)
    UNION ALL
    SELECT 'queue', j.queue, sum((l.value ->> 'interval')::double precision)
    FROM jobs AS j JOIN jsonb_each(%(queues)s::jsonb) AS l ON l.key = j.queue
    WHERE j.id = ANY(%(ids)s::bigint[]) AND l.value ->> 'interval' IS NOT NULL
    GROUP BY j.queue
) AS s
ON CONFLICT (kind, key) DO UPDATE
SET next_start = greatest(rate_limits.next_start, %(now)s) + (excluded.next_start - %(now)s)

-- name: claim_plan
-- Without fresh statistics (a table filled since its last ANALYZE) the planner
-- believes few jobs are ready and sorts all of them to take the first few; with
-- sorting off it walks jobs_ready in order and stops at the limit.
SET LOCAL enable_sort = off

-- name: claim_plan_generic
-- claim_plan, and the plan each statement was first given kept for good: a
-- claim with its arguments planned anew each time (PostgreSQL's choice for it)
-- spent 0.3 ms planning to run for 0.15, and its events' INSERT 0.1 ms more
-- (log_min_duration_statement, bind against execute, one job ready). The
-- generic plans are the same walk of jobs_ready in order (EXPLAIN). It lasts to
-- the commit, so the claim's events and rates after it keep theirs too: the
-- claim is the last thing a worker's transaction does.
SELECT set_config('enable_sort', 'off', true),
       set_config('plan_cache_mode', 'force_generic_plan', true)

-- name: claim_plan_reset
SET LOCAL enable_sort = on

-- name: claim_plan_no_jit
-- The ranking of a claim under limits still sorts its few candidates, which
-- enable_sort = off prices so high that the planner would compile the statement
-- (JIT): hundreds of milliseconds for a statement that runs in a few.
SET LOCAL jit = off

-- name: claim_plan_jit_reset
SET LOCAL jit TO DEFAULT

-- name: notify
-- Wakes listeners of this schema everywhere; delivered when the transaction
-- commits. Payload: ready (jobs became ready) or events (events appended).
SELECT pg_notify(%(channel)s, %(payload)s)

-- name: request_cancel
UPDATE jobs SET cancel_requested = true, updated_at = %(now)s
WHERE id = %(job_id)s AND state IN ({leased}) AND NOT cancel_requested

-- name: request_pause
UPDATE jobs SET pause_requested = true, updated_at = %(now)s
WHERE id = %(job_id)s AND state = {state:running} AND NOT pause_requested

-- name: heartbeat
-- One statement, however many jobs the worker holds: what each asks of it, and
-- the renewal of the leases with less than their share, or the margin, left
-- (the others are not written). The renewal skips the rows another
-- transaction has locked (as a rule this worker's own report of them) instead
-- of waiting: waiting, it could deadlock with that report, which locks the same
-- rows in another order, and PostgreSQL detects a deadlock only after
-- deadlock_timeout (1 s), longer than a short lease lasts. A row skipped is
-- moved by that report, or renewed by the next beat.
WITH held AS (
    SELECT id, state, cancel_requested, pause_requested,
           lease_expires_at < %(now)s + greatest(lease_seconds * %(share)s, %(margin)s) AS due
    FROM jobs
    WHERE worker = %(worker)s AND state IN ({leased}) AND id = ANY(%(ids)s::bigint[])
), renewed AS (
    UPDATE jobs SET lease_expires_at = %(now)s + lease_seconds
    WHERE id = ANY(ARRAY(SELECT id FROM jobs
                         WHERE id IN (SELECT id FROM held WHERE due)
                           AND worker = %(worker)s AND state IN ({leased})
                         FOR UPDATE SKIP LOCKED))
)
SELECT id, state, cancel_requested, pause_requested FROM held

-- name: held
SELECT id, state, cancel_requested, pause_requested FROM jobs
WHERE id = %(job_id)s AND lease_token = %(token)s

-- name: steps_of_job
SELECT name, result FROM steps WHERE job_id = %s

-- name: save_step
-- Only the worker holding the lease may record a step; a zombie's result is dropped.
INSERT INTO steps (job_id, name, result, at)
SELECT %(job_id)s, %(name)s, %(result)s, %(now)s
WHERE EXISTS (SELECT 1 FROM jobs WHERE id = %(job_id)s AND lease_token = %(token)s)
ON CONFLICT (job_id, name) DO NOTHING

-- name: save_checkpoint
UPDATE jobs SET checkpoint = %(data)s, updated_at = %(now)s
WHERE id = %(job_id)s AND lease_token = %(token)s
RETURNING id, state, cancel_requested, pause_requested

-- name: create_awakeable
INSERT INTO awakeables (id, job_id, name, created_at) VALUES (%s, %s, %s, %s)
ON CONFLICT (job_id, name) DO NOTHING

-- name: awakeable_by_name
SELECT * FROM awakeables WHERE job_id = %s AND name = %s

-- name: awakeable_by_id
SELECT * FROM awakeables WHERE id = %s

-- name: awakeables_of_job
SELECT * FROM awakeables WHERE job_id = %s ORDER BY created_at, name

-- name: set_awakeable_timeout
UPDATE awakeables SET timeout_at = %s WHERE id = %s AND timeout_at IS NULL

-- name: settle_awakeable
UPDATE awakeables SET state = %(state)s, value = %(value)s, reason = %(reason)s,
                      resolved_at = %(now)s
WHERE id = %(id)s AND state = {awakeable:pending}

-- name: add_dependency
INSERT INTO dependencies (job_id, depends_on, kind) VALUES (%s, %s, %s)
ON CONFLICT DO NOTHING

-- name: remove_dependencies
DELETE FROM dependencies WHERE job_id = ANY(%s::bigint[]) AND kind = %s

-- name: dependencies_of
SELECT jobs.* FROM dependencies AS d JOIN jobs ON jobs.id = d.depends_on
WHERE d.job_id = %s AND d.kind = %s
ORDER BY jobs.id

-- name: lock_job
-- Lock order everywhere: the job first, then its awakeables.
SELECT * FROM jobs WHERE id = %s FOR UPDATE

-- name: awaited_locked
-- FOR SHARE: a job ending now either commits first (and we see it ended) or
-- waits for us (and then finds this waiter).
SELECT jobs.* FROM dependencies AS d JOIN jobs ON jobs.id = d.depends_on
WHERE d.job_id = %s AND d.kind = %s
ORDER BY jobs.id
FOR SHARE OF jobs

-- name: waiting_on
SELECT DISTINCT jobs.* FROM dependencies AS d JOIN jobs ON jobs.id = d.job_id
WHERE d.depends_on = ANY(%s::bigint[]) AND jobs.state IN ({state:pending}, {state:suspended})

-- name: stranded_waiters
SELECT * FROM jobs
WHERE state IN ({state:pending}, {state:suspended})
  AND EXISTS (SELECT 1 FROM dependencies AS d WHERE d.job_id = jobs.id)
  AND NOT EXISTS (
      SELECT 1 FROM dependencies AS d JOIN jobs AS p ON p.id = d.depends_on
      WHERE d.job_id = jobs.id AND p.state NOT IN ({terminal}))
LIMIT %(limit)s

-- name: unwakeable
-- Suspended jobs with nothing that could wake them: no timer, no pending
-- awakeable, no child joined. The defence in depth behind one-transaction changes.
SELECT * FROM jobs
WHERE state = {state:suspended} AND wake_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM awakeables AS a
                  WHERE a.job_id = jobs.id AND a.state = {awakeable:pending})
  AND NOT EXISTS (SELECT 1 FROM dependencies AS d
                  WHERE d.job_id = jobs.id AND d.kind = {dependency:join})
LIMIT %(limit)s

-- name: children_of
SELECT * FROM jobs WHERE parent_id = %s ORDER BY id

-- name: pause_queue
INSERT INTO paused_queues (queue, paused_at) VALUES (%s, %s) ON CONFLICT DO NOTHING

-- name: resume_queue
DELETE FROM paused_queues WHERE queue = %s

-- name: queue_counts
SELECT queue, state, count(*) FROM jobs GROUP BY queue, state

-- name: paused_queues
SELECT queue FROM paused_queues

-- name: oldest_ready
-- Since when each queue's oldest ready job has waited: its last move was into
-- ready. Reads the ready jobs only (the jobs_ready partial index's predicate).
SELECT queue, min(updated_at) FROM jobs WHERE state = {state:ready} GROUP BY queue

-- name: due_timers
SELECT * FROM jobs WHERE state = {state:scheduled} AND run_at <= %(now)s
UNION ALL
SELECT * FROM jobs WHERE state = {state:backing-off} AND next_retry_at <= %(now)s
UNION ALL
SELECT * FROM jobs WHERE state = {state:suspended} AND wake_at <= %(now)s
LIMIT %(limit)s

-- name: expired_pauses
SELECT * FROM jobs WHERE state = {state:paused} AND pause_deadline <= %(now)s LIMIT %(limit)s

-- name: next_timer_at
SELECT min(t) FROM (
    SELECT min(run_at) AS t FROM jobs WHERE state = {state:scheduled}
    UNION ALL
    SELECT min(next_retry_at) FROM jobs WHERE state = {state:backing-off}
    UNION ALL
    SELECT min(wake_at) FROM jobs WHERE state = {state:suspended}
) AS timers

-- name: expired_leases
SELECT * FROM jobs WHERE state IN ({leased}) AND lease_expires_at < %(now)s LIMIT %(limit)s

-- name: claimed_by
-- Read only after a batch whose answer was lost; "state IN (leased)" lets the
-- partial index on leased jobs (few) serve it.
SELECT * FROM jobs WHERE state IN ({leased}) AND state = {state:running}
                   AND worker = %(worker)s

-- name: resign
DELETE FROM leaders WHERE role = %(role)s AND holder = %(holder)s

-- name: worker_seen
UPDATE workers SET seen_at = %(now)s WHERE id = %(id)s

-- name: register_worker
INSERT INTO workers (id, host, pid, concurrency, queues, handlers, started_at, seen_at)
VALUES (%(id)s, %(host)s, %(pid)s, %(concurrency)s, %(queues)s, %(handlers)s, %(now)s, %(now)s)
ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, handlers = excluded.handlers

-- name: unregister_worker
DELETE FROM workers WHERE id = %(id)s

-- name: forget_workers
DELETE FROM workers WHERE seen_at < %(since)s

-- name: live_workers
SELECT id, host, pid, concurrency, queues, handlers, started_at, seen_at
FROM workers WHERE seen_at >= %(since)s ORDER BY started_at, id

-- name: recheck
-- Claimed ahead, not started yet: those an operator asked something of since the
-- claim, or that this worker no longer holds (usually none).
SELECT id, held, cancel_requested, pause_requested, queue_paused FROM (
    SELECT id, worker = %(worker)s AND state IN ({leased}) AS held, cancel_requested,
           pause_requested, queue IN (SELECT queue FROM paused_queues) AS queue_paused
    FROM jobs WHERE id = ANY(%(ids)s::bigint[])) AS checked
WHERE NOT held OR cancel_requested OR pause_requested OR queue_paused

-- name: try_lead
INSERT INTO leaders (role, holder, expires_at) VALUES (%(role)s, %(holder)s, %(now)s + %(ttl)s)
ON CONFLICT (role) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE leaders.holder = excluded.holder OR leaders.expires_at < %(now)s

-- name: database_time
-- The clock leases, start times and timers are judged by.
SELECT extract(epoch FROM clock_timestamp())::double precision

-- name: current_search_path
SELECT current_setting('search_path')

-- name: set_local_search_path
-- For this transaction only: Instar's schema first (transactional enqueue, migrations).
SELECT set_config('search_path', %s, true)

-- name: listen
LISTEN {channel}

-- name: add_token
INSERT INTO api_tokens (name, digest, scopes, queue, created_at)
VALUES (%(name)s, %(digest)s, %(scopes)s, %(queue)s, %(now)s) ON CONFLICT DO NOTHING

-- name: token_by_digest
SELECT name, digest, scopes, queue, created_at, revoked_at FROM api_tokens
WHERE digest = %(digest)s AND revoked_at IS NULL

-- name: tokens
SELECT name, digest, scopes, queue, created_at, revoked_at FROM api_tokens ORDER BY created_at, name

-- name: revoke_token
UPDATE api_tokens SET revoked_at = %(now)s WHERE name = %(name)s AND revoked_at IS NULL

-- name: add_key
INSERT INTO api_keys (name, value) VALUES (%(name)s, %(value)s) ON CONFLICT DO NOTHING

-- name: key
SELECT value FROM api_keys WHERE name = %(name)s

-- name: awakeables_in_state
SELECT a.* FROM awakeables a
WHERE a.state = %(state)s
  AND (%(queue)s::text IS NULL OR EXISTS (
    SELECT 1 FROM jobs j WHERE j.id = a.job_id AND j.queue = %(queue)s::text))
ORDER BY a.created_at, a.id LIMIT %(limit)s

-- name: count_matching
-- Jobs of a listing's filter (without its state), up to an id, counted by state.
SELECT state, count(*) FROM jobs
WHERE (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(name)s::text IS NULL OR name = %(name)s::text
       OR right(name, length(%(name)s::text) + 1) = '.' || %(name)s::text)
  AND id <= %(until)s
GROUP BY state

-- name: last_job_id
SELECT coalesce(max(id), 0) FROM jobs

-- name: finished_entered
SELECT queue, state, entered FROM state_totals
WHERE state IN ({terminal})

-- name: finished_totals
SELECT queue, state, entered - exited - pruned FROM state_totals
WHERE state IN ({terminal})

-- name: flows_since
SELECT minute, queue, state, entered, exited FROM state_flows WHERE minute >= %(since)s
ORDER BY minute

-- name: rollup_cursor
SELECT event_id FROM rollups WHERE name = %(name)s

-- name: start_rollup
INSERT INTO rollups (name, event_id) VALUES (%(name)s, 0) ON CONFLICT DO NOTHING

-- name: advance_rollup
UPDATE rollups SET event_id = %(to)s WHERE name = %(name)s AND event_id = %(from)s

-- name: lock_rollup
SELECT event_id FROM rollups WHERE name = %(name)s FOR UPDATE

-- name: roll_up_plan
-- For the rest of the roll-up's transaction: the batch walks events_feed in
-- (tx, id) order and stops at its limit. Left to its estimates, which lag a
-- feed that grows by thousands of events a second, the planner took every
-- event after the cursor with a bitmap scan and sorted them to keep the first
-- batch: each batch read all that were left (10,000 of 60,000 events: 28.7 ms
-- a batch against 16.8, mean of 6, EXPLAIN ANALYZE). With sorting priced off,
-- the statement would also be compiled (JIT: 400 ms), so that is off too.
SELECT set_config('enable_sort', 'off', true), set_config('jit', 'off', true)

-- name: roll_up
-- The next batch of the feed after the cursor (in commit order, as events_since
-- reads it), counted into the minutes and the totals in one statement: moves
-- into and out of the finished states (entering the new state, leaving the old
-- one: a retry leaves failed); notes count for neither. Returns the batch's
-- last event id and its size.
WITH start AS (
    SELECT coalesce(
        (SELECT tx FROM events WHERE id = %(after)s),
        (SELECT min(tx) FROM events WHERE id > %(after)s),
        '0'::xid8) AS tx
), batch AS (
    SELECT e.id, e.tx, e.at, e.from_state, e.to_state, e.job_id
    FROM events AS e, start
    WHERE (e.tx, e.id) > (start.tx, %(after)s::bigint)
      AND e.tx < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY e.tx, e.id
    LIMIT %(limit)s
), moves AS (
    SELECT floor(b.at / 60) * 60 AS minute, j.queue, b.to_state AS state,
           1 AS entered, 0 AS exited
    FROM batch AS b JOIN jobs AS j ON j.id = b.job_id
    WHERE b.to_state IN ({terminal}) AND b.from_state IS DISTINCT FROM b.to_state
    UNION ALL
    SELECT floor(b.at / 60) * 60, j.queue, b.from_state, 0, 1
    FROM batch AS b JOIN jobs AS j ON j.id = b.job_id
    WHERE b.from_state IN ({terminal}) AND b.from_state <> b.to_state
), flows AS (
    INSERT INTO state_flows (minute, queue, state, entered, exited)
    SELECT minute, queue, state, sum(entered), sum(exited) FROM moves
    GROUP BY minute, queue, state
    ON CONFLICT (minute, queue, state) DO UPDATE
    SET entered = state_flows.entered + excluded.entered,
        exited = state_flows.exited + excluded.exited
), totals AS (
    INSERT INTO state_totals (queue, state, entered, exited)
    SELECT queue, state, sum(entered), sum(exited) FROM moves
    GROUP BY queue, state
    ON CONFLICT (queue, state) DO UPDATE
    SET entered = state_totals.entered + excluded.entered,
        exited = state_totals.exited + excluded.exited
)
SELECT (SELECT id FROM batch ORDER BY tx DESC, id DESC LIMIT 1), (SELECT count(*) FROM batch)

-- name: prune_scan
-- The next jobs by id after the pruning cursor, whatever their state (the
-- caller picks the finished ones that are due).
SELECT id, name, queue, state, updated_at, created_at, version FROM jobs
WHERE id > %(after)s ORDER BY id LIMIT %(limit)s

-- name: pruning_marks
SELECT cursor_job, pruned_through FROM pruning

-- name: lock_pruning
SELECT cursor_job, pruned_through FROM pruning FOR UPDATE

-- name: prune_jobs
-- The jobs given as (id, version) that have not moved since they were read,
-- are still finished, have no job waiting on them, no children left and no
-- event the rollup has not counted yet. A job that moves meanwhile holds its
-- row lock: the delete waits, then finds its new version and leaves it.
DELETE FROM jobs
WHERE (id, version) IN (SELECT * FROM unnest(%(ids)s::bigint[], %(versions)s::integer[]))
  AND state IN ({terminal})
  AND NOT EXISTS (SELECT 1 FROM dependencies d WHERE d.depends_on = jobs.id)
  AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = jobs.id)
  AND NOT EXISTS (SELECT 1 FROM events e WHERE e.job_id = jobs.id AND e.id > %(rolled_up_to)s)
RETURNING id, queue, state

-- name: prune_events
-- Returns the ids of the events removed (the largest marks how far pruning went).
-- The rows of pruned jobs here and below are found job by job through their
-- job_id indexes (a join with the ids: with job_id = ANY(...), the planner
-- scanned the whole events table of a window, 0.5 s each at 150,000 events).
DELETE FROM events AS e USING unnest(%s::bigint[]) AS pruned(id) WHERE e.job_id = pruned.id
RETURNING e.id

-- name: prune_steps
DELETE FROM steps AS s USING unnest(%s::bigint[]) AS pruned(id) WHERE s.job_id = pruned.id

-- name: prune_awakeables
DELETE FROM awakeables AS a USING unnest(%s::bigint[]) AS pruned(id) WHERE a.job_id = pruned.id

-- name: prune_edges
DELETE FROM dependencies AS d USING unnest(%s::bigint[]) AS pruned(id) WHERE d.job_id = pruned.id

-- name: count_pruned
INSERT INTO state_totals (queue, state, entered, exited, pruned)
VALUES (%(queue)s, %(state)s, 0, 0, %(pruned)s)
ON CONFLICT (queue, state) DO UPDATE SET pruned = state_totals.pruned + excluded.pruned

-- name: mark_pruning
UPDATE pruning SET cursor_job = coalesce(%(cursor)s::bigint, cursor_job),
                   pruned_through = greatest(pruned_through, %(through)s)

-- name: add_bulk
INSERT INTO bulk_operations (id, spec, progress, done, owner, created_at, heartbeat_at)
VALUES (%(id)s, %(spec)s, %(progress)s, false, %(owner)s, %(now)s, %(now)s)

-- name: forget_bulks
-- Finished bulk operations asked for before a moment.
DELETE FROM bulk_operations WHERE done AND created_at < %(before)s

-- name: bulk
SELECT id, spec, progress, done, owner, created_at, heartbeat_at FROM bulk_operations
WHERE id = %(id)s

-- name: save_bulk
-- Only while the operation is unfinished and still this server's.
UPDATE bulk_operations SET progress = %(progress)s, done = %(done)s, heartbeat_at = %(now)s
WHERE id = %(id)s AND owner = %(owner)s AND NOT done

-- name: take_bulks
-- Unfinished bulk operations whose server has been quiet since before a moment
-- (two servers taking over at once: the second finds the heartbeat fresh).
UPDATE bulk_operations SET owner = %(owner)s, heartbeat_at = %(now)s
WHERE NOT done AND heartbeat_at < %(quiet_since)s
RETURNING id, spec, progress, done, owner, created_at, heartbeat_at

-- name: schedules
SELECT name, expression, tz, paused, last_slot, last_job_id, seen_at FROM schedules ORDER BY name

-- name: schedule_seen
INSERT INTO schedules (name, expression, tz, paused, last_slot, seen_at)
VALUES (%(name)s, %(expression)s, %(tz)s, false, %(first_slot)s, %(now)s)
ON CONFLICT (name) DO UPDATE SET expression = excluded.expression, tz = excluded.tz,
    seen_at = excluded.seen_at
RETURNING name, expression, tz, paused, last_slot, last_job_id, seen_at

-- name: advance_schedule
UPDATE schedules
SET last_slot = %(last_slot)s, last_job_id = coalesce(%(last_job_id)s::bigint, last_job_id)
WHERE name = %(name)s AND last_slot < %(last_slot)s

-- name: pause_schedule
UPDATE schedules SET paused = %(paused)s WHERE name = %(name)s AND paused <> %(paused)s

-- name: moves_at
-- The moves of these jobs written at one instant (one transaction's), notes left out.
SELECT e.* FROM events AS e JOIN unnest(%(ids)s::bigint[]) AS moved(id) ON e.job_id = moved.id
WHERE e.at = %(at)s AND e.from_state IS DISTINCT FROM e.to_state
ORDER BY e.id

-- name: forget_declared_limits
DELETE FROM flow_limits
WHERE (kind = 'queue' AND name IN (SELECT unnest(%(queues)s::text[])))
   OR (kind = 'job' AND name IN (SELECT unnest(%(names)s::text[])))

-- name: declare_limit
INSERT INTO flow_limits (kind, name, concurrency, key, rate_count, rate_per, rate_key, seen_at)
VALUES (%(kind)s, %(name)s, %(concurrency)s, %(key)s, %(rate_count)s, %(rate_per)s, %(rate_key)s, %(now)s)
ON CONFLICT (kind, name) DO UPDATE
SET concurrency = excluded.concurrency, key = excluded.key, rate_count = excluded.rate_count,
    rate_per = excluded.rate_per, rate_key = excluded.rate_key, seen_at = excluded.seen_at

-- name: flow_limits
-- Each declared limit with how many of its jobs run (through the leased jobs'
-- index by queue, or the leased jobs) and wait (through the ready jobs).
SELECT f.kind, f.name, f.concurrency, f.key, f.rate_count, f.rate_per, f.rate_key,
       CASE f.kind
           WHEN 'queue' THEN (SELECT count(*) FROM jobs
                              WHERE queue = f.name AND state IN ({leased}))
           ELSE (SELECT count(*) FROM jobs WHERE name = f.name AND state IN ({leased}))
       END,
       CASE f.kind
           WHEN 'queue' THEN (SELECT count(*) FROM jobs WHERE queue = f.name AND state = {state:ready})
           ELSE (SELECT count(*) FROM jobs WHERE name = f.name AND state = {state:ready})
       END,
       f.seen_at
FROM flow_limits AS f ORDER BY f.kind DESC, f.name

-- name: rate_hold
-- The rates that hold a ready job back (a rate row with none waiting counts for
-- nothing): the earliest next start after now, and whether one reopened after
-- `since` (1 when so).
SELECT min(CASE WHEN r.next_start > %(now)s THEN r.next_start END),
       coalesce(max(CASE WHEN r.next_start <= %(now)s THEN 1 ELSE 0 END), 0)
FROM rate_limits AS r
WHERE r.next_start > %(since)s
  AND ((r.kind = 'key'
        AND EXISTS (SELECT 1 FROM jobs WHERE state = {state:ready} AND rate_key = r.key))
    OR (r.kind = 'queue'
        AND EXISTS (SELECT 1 FROM jobs WHERE state = {state:ready} AND queue = r.key)))

-- name: forget_rates
DELETE FROM rate_limits
WHERE (kind, key) IN (SELECT kind, key FROM rate_limits WHERE next_start < %(before)s
                      LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
