-- Named queries of the SQLite store. Placeholders are filled from the lifecycle
-- table when the file is loaded: {leased}, {terminal} (every state of a kind),
-- {claim_from}, {claim_to} (the claim's two ends), {state:NAME} (one checked state).

-- name: pragmas
-- WAL lets readers run beside the one writer; FULL keeps every commit on disk.
PRAGMA journal_mode = WAL;

-- name: staged_moves
-- The moves of one round of move_batch, staged on the writing connection before
-- its statements (SQLiteStore._moves): read as columns, where reading them from
-- a JSON text parsed each move again for every field (SQLite 3.40: 25 -> 13 µs
-- a move for move_batch and its events, 300 moves a round). A table of the
-- connection's own (TEMP), in the order of records.move_rows after n.
CREATE TEMP TABLE IF NOT EXISTS staged_moves (
    n INTEGER PRIMARY KEY, job_id INTEGER, from_state TEXT, to_state TEXT, attempt,
    max_attempts, run_at, next_retry_at, worker, lease_token, lease_expires_at, result,
    error, version, guard_token, wake_at, pause_deadline, rerun, clear_progress, trigger,
    reporter, actor, detail
)

-- name: clear_staged_moves
DELETE FROM temp.staged_moves

-- name: stage_move
-- One move's row; SQLiteStore._moves repeats the VALUES row to stage many at once.
INSERT INTO temp.staged_moves (
    job_id, from_state, to_state, attempt, max_attempts, run_at, next_retry_at, worker,
    lease_token, lease_expires_at, result, error, version, guard_token, wake_at,
    pause_deadline, rerun, clear_progress, trigger, reporter, actor, detail
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)

-- name: insert_job
-- A job whose key exists already is skipped; the caller then reads the existing one.
-- Positional parameters: this runs once per job on the enqueue path.
INSERT INTO jobs (name, queue, state, priority, max_attempts, args, key, run_at,
                  lease_seconds, pause_timeout, parent_id, created_at, updated_at,
                  limit_key, rate_key, trace_context)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING

-- name: insert_jobs_alike
-- Jobs without keys that differ only in their arguments (a JSON array of the
-- arguments' JSON texts, in the 6th place), in one statement and in order.
INSERT INTO jobs (name, queue, state, priority, max_attempts, args, key, run_at,
                  lease_seconds, pause_timeout, parent_id, created_at, updated_at,
                  limit_key, rate_key, trace_context)
SELECT ?1, ?2, ?3, ?4, ?5, value, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16
FROM json_each(?6) ORDER BY key

-- name: max_job_id
SELECT coalesce(max(id), 0) FROM jobs

-- name: job_by_key
SELECT * FROM jobs WHERE key = ?

-- name: get_job
SELECT * FROM jobs WHERE id = ?

-- name: jobs_in
SELECT * FROM jobs WHERE id IN (SELECT value FROM json_each(?))

-- name: list_jobs
-- Newest first; each filter is optional. A name matches the full name or its
-- last part ("resize" finds "app.tasks.resize"), as everywhere else.
SELECT * FROM jobs
WHERE (:state IS NULL OR state = :state)
  AND (:queue IS NULL OR queue = :queue)
  AND (:name IS NULL OR name = :name OR substr(name, -length(:name) - 1) = '.' || :name)
  AND (:before IS NULL OR id < :before)
  AND (:parent IS NULL OR parent_id = :parent)
  AND (:created_after IS NULL OR created_at > :created_after)
  AND (:created_before IS NULL OR created_at < :created_before)
  AND (:args_path IS NULL OR args -> :args_path IN (:args_text, :args_literal))
ORDER BY id DESC
LIMIT :limit

-- name: count_by_state
SELECT state, count(*) FROM jobs GROUP BY state

-- name: insert_enqueued_event
-- The first event of one new job (id, state, trigger, actor), inserted just after it.
INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt, worker, actor, detail)
VALUES (?, ?, NULL, ?, ?, 0, NULL, ?, NULL)

-- name: insert_enqueued_events
-- The first event of each new job, in one statement.
INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt, worker, actor, detail)
SELECT id, :now, NULL, state, :trigger, 0, NULL, :actor, NULL
FROM jobs WHERE id IN (SELECT value FROM json_each(:ids))
ORDER BY id

-- name: insert_move_events
-- The events of the staged moves that won (:won), in the moves' order.
INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt, worker, actor, detail)
SELECT job_id, :now, from_state, to_state, trigger, attempt, reporter, actor, detail
FROM temp.staged_moves
WHERE job_id IN (SELECT value FROM json_each(:won))
ORDER BY n

-- name: insert_refusals
-- A report from a worker whose lease token is stale (the move did not win and
-- carried a token): a note in the timeline, never applied.
INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt, worker, actor, detail)
SELECT j.id, :now, j.state, j.state, :refused, j.attempt, m.reporter, m.actor,
       json_object('trigger', m.trigger, 'refused', m.to_state, 'reason', 'stale lease token')
FROM temp.staged_moves AS m JOIN jobs AS j ON j.id = m.job_id
WHERE m.guard_token IS NOT NULL
  AND m.job_id NOT IN (SELECT value FROM json_each(:won))
ORDER BY m.n

-- name: insert_claim_events
-- The claim's events, in the order the claim took the jobs.
INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt, worker, actor, detail)
SELECT id, :now, {claim_from}, {claim_to}, :trigger, attempt, worker, NULL, NULL
FROM jobs WHERE id IN (SELECT value FROM json_each(:ids))
ORDER BY priority DESC, id

-- name: insert_note
-- A note repeats the job's current state as both ends: it changes nothing.
INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt, worker, actor, detail)
SELECT id, :now, state, state, :trigger, attempt, :worker, :actor, :detail
FROM jobs WHERE id = :job_id

-- name: events_of_job
SELECT * FROM events WHERE job_id = :job_id AND id > :after ORDER BY id
LIMIT coalesce(:limit, -1)

-- name: events_since
-- The feed. One writer at a time assigns ids, so id order is commit order and
-- the primary key serves the scan.
SELECT e.* FROM events AS e
WHERE e.id > :after
  AND (:state IS NULL OR e.to_state = :state)
  AND (:queue IS NULL AND :name IS NULL
       OR EXISTS (SELECT 1 FROM jobs AS j WHERE j.id = e.job_id
                    AND (:queue IS NULL OR j.queue = :queue)
                    AND (:name IS NULL OR j.name = :name)))
ORDER BY e.id
LIMIT :limit

-- name: events_of_job_since
-- The feed of one job, through events_job (job_id, id).
SELECT e.* FROM events AS e
WHERE e.job_id = :job_id AND e.id > :after
  AND (:state IS NULL OR e.to_state = :state)
  AND (:queue IS NULL AND :name IS NULL
       OR EXISTS (SELECT 1 FROM jobs AS j WHERE j.id = e.job_id
                    AND (:queue IS NULL OR j.queue = :queue)
                    AND (:name IS NULL OR j.name = :name)))
ORDER BY e.id
LIMIT :limit

-- name: held_back_events
-- One writer at a time hands out ids in commit order: nothing is ever held back.
SELECT 0

-- name: last_event_id
SELECT max(id) FROM events

-- name: move_batch
-- Many moves in one statement, read from staged_moves (SQLiteStore._moves).
-- Compare-and-set on (id, state) plus the version or the lease token the
-- caller holds; RETURNING names the moves that won, and whether anything waits
-- on each (other jobs, or a machine's reply; so the engine reads waiters only
-- when there are some). Job ids must be distinct. A move that keeps the lease
-- never shortens it (heartbeats may have renewed it since the move's run read it).
UPDATE jobs
SET state = m.to_state, version = jobs.version + 1, updated_at = :now,
    attempt = m.attempt, max_attempts = m.max_attempts, run_at = m.run_at,
    next_retry_at = m.next_retry_at, worker = m.worker, lease_token = m.lease_token,
    lease_expires_at = CASE WHEN m.lease_expires_at IS NULL THEN NULL
                            ELSE max(m.lease_expires_at,
                                     coalesce(jobs.lease_expires_at, m.lease_expires_at)) END,
    result = m.result, error = m.error,
    wake_at = m.wake_at, pause_deadline = m.pause_deadline, rerun = m.rerun,
    progress = CASE WHEN m.clear_progress THEN NULL ELSE jobs.progress END,
    cancel_requested = CASE WHEN m.to_state = {claim_to} THEN 0 ELSE jobs.cancel_requested END,
    pause_requested = CASE WHEN m.to_state = {claim_to} THEN 0 ELSE jobs.pause_requested END
FROM temp.staged_moves AS m
WHERE jobs.id = m.job_id AND jobs.state = m.from_state
  AND (m.version IS NULL OR jobs.version = m.version)
  AND (m.guard_token IS NULL OR jobs.lease_token = m.guard_token)
RETURNING jobs.id, EXISTS (SELECT 1 FROM dependencies AS d WHERE d.depends_on = jobs.id)
          OR EXISTS (SELECT 1 FROM machine_replies AS r WHERE r.job_id = jobs.id)

-- name: claim_any_queue
-- One statement claims the whole batch; RETURNING order is not defined, so the caller sorts.
UPDATE jobs
SET state = {claim_to}, attempt = attempt + 1 - rerun, rerun = 0, worker = :worker,
    lease_token = lower(hex(randomblob(8))), lease_expires_at = :now + lease_seconds,
    cancel_requested = 0, pause_requested = 0, version = version + 1, updated_at = :now
WHERE id IN (SELECT id FROM jobs WHERE state = {claim_from}
               AND queue NOT IN (SELECT queue FROM paused_queues)
               AND (:names IS NULL OR name IN (SELECT value FROM json_each(:names)))
             ORDER BY priority DESC, id LIMIT :limit)
RETURNING *

-- name: claim_from_queues
UPDATE jobs
SET state = {claim_to}, attempt = attempt + 1 - rerun, rerun = 0, worker = :worker,
    lease_token = lower(hex(randomblob(8))), lease_expires_at = :now + lease_seconds,
    cancel_requested = 0, pause_requested = 0, version = version + 1, updated_at = :now
WHERE id IN (SELECT id FROM jobs WHERE state = {claim_from}
               AND queue IN (SELECT value FROM json_each(:queues))
               AND queue NOT IN (SELECT queue FROM paused_queues)
               AND (:names IS NULL OR name IN (SELECT value FROM json_each(:names)))
             ORDER BY priority DESC, id LIMIT :limit)
RETURNING *

-- name: flow_candidates
-- The first part of a claim under flow control (instar.registry.flow), which
-- claim_limited completes: the ready jobs in order, but none whose concurrency
-- key or queue has as many leased jobs as its limit, nor any whose rate may
-- not start a job yet. :jobs and :queues map job names and queues to
-- {"max": .., "interval": ..}. A job stored without a key (enqueued by code
-- without the limit) counts under its name. The leased jobs are read once
-- (they are few: the jobs running now), then joined by key.
job_limits AS (
    SELECT key AS name, json_extract(value, '$.max') AS most,
           json_extract(value, '$.interval') AS every
    FROM json_each(:jobs)
), queue_limits AS (
    SELECT key AS queue, json_extract(value, '$.max') AS most,
           json_extract(value, '$.interval') AS every
    FROM json_each(:queues)
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
      AND (:queue_filter IS NULL OR j.queue IN (SELECT value FROM json_each(:queue_filter)))
      AND j.queue NOT IN (SELECT queue FROM paused_queues)
      AND (:names IS NULL OR j.name IN (SELECT value FROM json_each(:names)))
      AND (jl.most IS NULL OR coalesce(kr.n, 0) < jl.most)
      AND (ql.most IS NULL OR coalesce(qr.n, 0) < ql.most)
      AND (rk.next_start IS NULL OR rk.next_start <= :now)
      AND (rq.next_start IS NULL OR rq.next_start <= :now)
    ORDER BY j.priority DESC, j.id
    LIMIT :scan
)

-- name: claim_limited
-- After flow_candidates: of those, no more per key and per queue than the room
-- left, and one per rate. SQLite has one writer at a time: what the claim
-- counts cannot change before it commits.
ranked AS (
    SELECT c.*,
           row_number() OVER (PARTITION BY key ORDER BY priority DESC, id) AS key_rank,
           row_number() OVER (PARTITION BY queue ORDER BY priority DESC, id) AS queue_rank,
           row_number() OVER (PARTITION BY rate_key ORDER BY priority DESC, id) AS rate_rank
    FROM candidates AS c
)
UPDATE jobs
SET state = {claim_to}, attempt = attempt + 1 - rerun, rerun = 0, worker = :worker,
    lease_token = lower(hex(randomblob(8))), lease_expires_at = :now + lease_seconds,
    cancel_requested = 0, pause_requested = 0, version = version + 1, updated_at = :now
WHERE id IN (SELECT id FROM ranked
             WHERE (key IS NULL OR key_running + key_rank <= key_most)
               AND (queue_most IS NULL OR queue_running + queue_rank <= queue_most)
               AND (rate_key IS NULL OR rate_rank = 1)
               AND (queue_every IS NULL OR queue_rank = 1)
             ORDER BY priority DESC, id LIMIT :limit)
RETURNING *

-- name: advance_rates
-- After a claim under rates: each rate's next start moves one interval on per
-- job it started, from now or from its next start if that is later (GCRA).
INSERT INTO rate_limits (kind, key, next_start)
SELECT s.kind, s.key,
       max(:now, coalesce((SELECT r.next_start FROM rate_limits AS r
                           WHERE r.kind = s.kind AND r.key = s.key), 0)) + s.total
FROM (
    SELECT 'key' AS kind, coalesce(j.rate_key, j.name) AS key,
           sum(json_extract(l.value, '$.interval')) AS total
    FROM jobs AS j JOIN json_each(:jobs) AS l ON l.key = j.name
    WHERE j.id IN (SELECT value FROM json_each(:ids))
      AND json_extract(l.value, '$.interval') IS NOT NULL
    GROUP BY coalesce(j.rate_key, j.name)
    UNION ALL
    SELECT 'queue', j.queue, sum(json_extract(l.value, '$.interval'))
    FROM jobs AS j JOIN json_each(:queues) AS l ON l.key = j.queue
    WHERE j.id IN (SELECT value FROM json_each(:ids))
      AND json_extract(l.value, '$.interval') IS NOT NULL
    GROUP BY j.queue
) AS s
WHERE true
ON CONFLICT (kind, key) DO UPDATE SET next_start = excluded.next_start

-- name: request_cancel
-- Only the worker holding the lease can end a leased job; it reads this flag.
UPDATE jobs SET cancel_requested = 1, updated_at = :now
WHERE id = :job_id AND state IN ({leased}) AND cancel_requested = 0

-- name: renew_leases
-- The leases the worker holds with less than their share, or the margin, left,
-- renewed in one statement however many (the others are not written).
UPDATE jobs SET lease_expires_at = :now + lease_seconds
WHERE worker = :worker AND state IN ({leased})
  AND id IN (SELECT value FROM json_each(:ids))
  AND lease_expires_at < :now + max(lease_seconds * :share, :margin)

-- name: heartbeat
-- What each job the worker still holds asks of it.
SELECT id, state, cancel_requested, pause_requested FROM jobs
WHERE worker = :worker AND state IN ({leased})
  AND id IN (SELECT value FROM json_each(:ids))

-- name: due_timers
-- Every state that waits for a time to run again, each through its own partial index.
SELECT * FROM jobs WHERE state = {state:scheduled} AND run_at <= :now
UNION ALL
SELECT * FROM jobs WHERE state = {state:backing-off} AND next_retry_at <= :now
UNION ALL
SELECT * FROM jobs WHERE state = {state:suspended} AND wake_at <= :now
LIMIT :limit

-- name: expired_pauses
SELECT * FROM jobs WHERE state = {state:paused} AND pause_deadline <= :now LIMIT :limit

-- name: next_timer_at
SELECT min(t) FROM (
    SELECT min(run_at) AS t FROM jobs WHERE state = {state:scheduled}
    UNION ALL
    SELECT min(next_retry_at) FROM jobs WHERE state = {state:backing-off}
    UNION ALL
    SELECT min(wake_at) FROM jobs WHERE state = {state:suspended}
)

-- name: expired_leases
SELECT * FROM jobs WHERE state IN ({leased}) AND lease_expires_at < :now LIMIT :limit

-- name: claimed_by
-- Read only after a batch whose answer was lost; "state IN (leased)" lets the
-- partial index on leased jobs (few) serve it.
SELECT * FROM jobs WHERE state IN ({leased}) AND state = {state:running} AND worker = :worker

-- name: resign
DELETE FROM leaders WHERE role = :role AND holder = :holder

-- name: worker_seen
UPDATE workers SET seen_at = :now WHERE id = :id

-- name: register_worker
INSERT INTO workers (id, host, pid, concurrency, queues, handlers, started_at, seen_at)
VALUES (:id, :host, :pid, :concurrency, :queues, :handlers, :now, :now)
ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, handlers = excluded.handlers

-- name: unregister_worker
DELETE FROM workers WHERE id = :id

-- name: forget_workers
DELETE FROM workers WHERE seen_at < :since

-- name: live_workers
SELECT id, host, pid, concurrency, queues, handlers, started_at, seen_at
FROM workers WHERE seen_at >= :since ORDER BY started_at, id

-- name: recheck
-- Claimed ahead, not started yet: those an operator asked something of since the
-- claim, or that this worker no longer holds (usually none).
SELECT id, held, cancel_requested, pause_requested, queue_paused FROM (
    SELECT id, worker = :worker AND state IN ({leased}) AS held, cancel_requested,
           pause_requested, queue IN (SELECT queue FROM paused_queues) AS queue_paused
    FROM jobs WHERE id IN (SELECT value FROM json_each(:ids)))
WHERE NOT held OR cancel_requested OR pause_requested OR queue_paused

-- name: try_lead
-- Take the role if it is free or expired, or renew it if we hold it.
INSERT INTO leaders (role, holder, expires_at) VALUES (:role, :holder, :now + :ttl)
ON CONFLICT (role) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE leaders.holder = excluded.holder OR leaders.expires_at < :now

-- name: quick_check
-- Reads every page (seconds on a large file): run by `instar migrate`, not on open.
PRAGMA quick_check(20)

-- name: data_version
PRAGMA data_version

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)

-- name: migrations_table_exists
SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'

-- name: schema_version
SELECT max(version) FROM schema_migrations

-- name: applied_migrations
SELECT version FROM schema_migrations

-- name: record_migration
INSERT INTO schema_migrations (version, name, applied_at)
VALUES (:version, :name, (julianday('now') - 2440587.5) * 86400.0)

-- name: set_progress
UPDATE jobs SET progress = :progress WHERE id = :job_id

-- name: request_pause
UPDATE jobs SET pause_requested = 1, updated_at = :now
WHERE id = :job_id AND state = {state:running} AND pause_requested = 0

-- name: held
SELECT id, state, cancel_requested, pause_requested FROM jobs
WHERE id = :job_id AND lease_token = :token

-- name: steps_of_job
SELECT name, result FROM steps WHERE job_id = ?

-- name: save_step
-- Only the worker holding the lease may record a step; a zombie's result is dropped.
INSERT INTO steps (job_id, name, result, at)
SELECT :job_id, :name, :result, :now
WHERE EXISTS (SELECT 1 FROM jobs WHERE id = :job_id AND lease_token = :token)
ON CONFLICT (job_id, name) DO NOTHING

-- name: save_checkpoint
UPDATE jobs SET checkpoint = :data, updated_at = :now
WHERE id = :job_id AND lease_token = :token
RETURNING id, state, cancel_requested, pause_requested

-- name: create_awakeable
INSERT INTO awakeables (id, job_id, name, created_at) VALUES (?, ?, ?, ?)
ON CONFLICT (job_id, name) DO NOTHING

-- name: awakeable_by_name
SELECT * FROM awakeables WHERE job_id = ? AND name = ?

-- name: awakeable_by_id
SELECT * FROM awakeables WHERE id = ?

-- name: awakeables_of_job
SELECT * FROM awakeables WHERE job_id = ? ORDER BY created_at, name

-- name: set_awakeable_timeout
UPDATE awakeables SET timeout_at = ? WHERE id = ? AND timeout_at IS NULL

-- name: settle_awakeable
-- Settled once: the compare-and-set on pending decides a resolve racing a timeout.
UPDATE awakeables SET state = :state, value = :value, reason = :reason, resolved_at = :now
WHERE id = :id AND state = {awakeable:pending}

-- name: add_dependency
INSERT INTO dependencies (job_id, depends_on, kind) VALUES (?, ?, ?)
ON CONFLICT DO NOTHING

-- name: remove_dependencies
DELETE FROM dependencies WHERE job_id IN (SELECT value FROM json_each(?)) AND kind = ?

-- name: dependencies_of
SELECT jobs.* FROM dependencies AS d JOIN jobs ON jobs.id = d.depends_on
WHERE d.job_id = ? AND d.kind = ?
ORDER BY jobs.id

-- name: lock_job
-- The transaction holds SQLite's one write lock already: a plain read.
SELECT * FROM jobs WHERE id = ?

-- name: awaited_locked
-- The write lock is held already: the same read as dependencies_of.
SELECT jobs.* FROM dependencies AS d JOIN jobs ON jobs.id = d.depends_on
WHERE d.job_id = ? AND d.kind = ?
ORDER BY jobs.id

-- name: waiting_on
SELECT DISTINCT jobs.* FROM dependencies AS d JOIN jobs ON jobs.id = d.job_id
WHERE d.depends_on IN (SELECT value FROM json_each(?))
  AND jobs.state IN ({state:pending}, {state:suspended})

-- name: stranded_waiters
-- Waiters whose awaited jobs have all ended: normally settled at once, this
-- sweep covers a process that died between the end and the settling.
SELECT * FROM jobs
WHERE state IN ({state:pending}, {state:suspended})
  AND EXISTS (SELECT 1 FROM dependencies AS d WHERE d.job_id = jobs.id)
  AND NOT EXISTS (
      SELECT 1 FROM dependencies AS d JOIN jobs AS p ON p.id = d.depends_on
      WHERE d.job_id = jobs.id AND p.state NOT IN ({terminal}))
LIMIT :limit

-- name: unwakeable
-- Suspended jobs with nothing that could wake them: no timer, no pending
-- awakeable, no child joined. A crash between a change and its wake-up could
-- once leave such a job; this sweep is the defence in depth.
SELECT * FROM jobs
WHERE state = {state:suspended} AND wake_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM awakeables AS a
                  WHERE a.job_id = jobs.id AND a.state = {awakeable:pending})
  AND NOT EXISTS (SELECT 1 FROM dependencies AS d
                  WHERE d.job_id = jobs.id AND d.kind = {dependency:join})
LIMIT :limit

-- name: children_of
SELECT * FROM jobs WHERE parent_id = ? ORDER BY id

-- name: pause_queue
INSERT INTO paused_queues (queue, paused_at) VALUES (?, ?) ON CONFLICT DO NOTHING

-- name: resume_queue
DELETE FROM paused_queues WHERE queue = ?

-- name: queue_counts
SELECT queue, state, count(*) FROM jobs GROUP BY queue, state

-- name: paused_queues
SELECT queue FROM paused_queues

-- name: oldest_ready
-- Since when each queue's oldest ready job has waited: its last move was into
-- ready. Reads the ready jobs only (the jobs_ready partial index's predicate).
SELECT queue, min(updated_at) FROM jobs WHERE state = {state:ready} GROUP BY queue

-- name: add_token
INSERT INTO api_tokens (name, digest, scopes, queue, created_at)
VALUES (:name, :digest, :scopes, :queue, :now) ON CONFLICT DO NOTHING

-- name: token_by_digest
SELECT name, digest, scopes, queue, created_at, revoked_at FROM api_tokens
WHERE digest = :digest AND revoked_at IS NULL

-- name: tokens
SELECT name, digest, scopes, queue, created_at, revoked_at FROM api_tokens ORDER BY created_at, name

-- name: revoke_token
UPDATE api_tokens SET revoked_at = :now WHERE name = :name AND revoked_at IS NULL

-- name: add_key
INSERT INTO api_keys (name, value) VALUES (:name, :value) ON CONFLICT DO NOTHING

-- name: key
SELECT value FROM api_keys WHERE name = :name

-- name: awakeables_in_state
SELECT a.* FROM awakeables a
WHERE a.state = :state
  AND (:queue IS NULL OR EXISTS (
    SELECT 1 FROM jobs j WHERE j.id = a.job_id AND j.queue = :queue))
ORDER BY a.created_at, a.id LIMIT :limit

-- name: count_matching
-- Jobs of a listing's filter (without its state), up to an id, counted by state.
SELECT state, count(*) FROM jobs
WHERE (:queue IS NULL OR queue = :queue)
  AND (:name IS NULL OR name = :name OR substr(name, -length(:name) - 1) = '.' || :name)
  AND id <= :until
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
SELECT minute, queue, state, entered, exited FROM state_flows WHERE minute >= :since
ORDER BY minute

-- name: rollup_cursor
SELECT event_id FROM rollups WHERE name = :name

-- name: start_rollup
INSERT INTO rollups (name, event_id) VALUES (:name, 0) ON CONFLICT DO NOTHING

-- name: advance_rollup
UPDATE rollups SET event_id = :to WHERE name = :name AND event_id = :from

-- name: lock_rollup
SELECT event_id FROM rollups WHERE name = :name

-- name: rollup_batch_end
-- The last id of the next batch after the cursor (ids are commit order here).
SELECT max(id), count(*) FROM (SELECT id FROM events WHERE id > :after ORDER BY id LIMIT :limit)

-- name: roll_up_flows
-- Moves into and out of the finished states: entering the new state, leaving
-- the old one (a retry leaves failed); notes (from_state = to_state) count for
-- neither. Only those moves meet the jobs table. Minutes are epoch seconds.
INSERT INTO state_flows (minute, queue, state, entered, exited)
SELECT minute, queue, state, sum(entered), sum(exited) FROM (
    SELECT CAST(e.at / 60 AS INTEGER) * 60.0 AS minute, j.queue AS queue,
           e.to_state AS state, 1 AS entered, 0 AS exited
    FROM events AS e JOIN jobs AS j ON j.id = e.job_id
    WHERE e.id > :after AND e.id <= :upto AND e.to_state IN ({terminal})
      AND e.from_state IS NOT e.to_state
    UNION ALL
    SELECT CAST(e.at / 60 AS INTEGER) * 60.0, j.queue, e.from_state, 0, 1
    FROM events AS e JOIN jobs AS j ON j.id = e.job_id
    WHERE e.id > :after AND e.id <= :upto AND e.from_state IN ({terminal})
      AND e.from_state <> e.to_state
) WHERE true
GROUP BY minute, queue, state
ON CONFLICT (minute, queue, state) DO UPDATE
SET entered = state_flows.entered + excluded.entered, exited = state_flows.exited + excluded.exited

-- name: roll_up_totals
INSERT INTO state_totals (queue, state, entered, exited)
SELECT queue, state, sum(entered), sum(exited) FROM (
    SELECT j.queue AS queue, e.to_state AS state, 1 AS entered, 0 AS exited
    FROM events AS e JOIN jobs AS j ON j.id = e.job_id
    WHERE e.id > :after AND e.id <= :upto AND e.to_state IN ({terminal})
      AND e.from_state IS NOT e.to_state
    UNION ALL
    SELECT j.queue, e.from_state, 0, 1
    FROM events AS e JOIN jobs AS j ON j.id = e.job_id
    WHERE e.id > :after AND e.id <= :upto AND e.from_state IN ({terminal})
      AND e.from_state <> e.to_state
) WHERE true
GROUP BY queue, state
ON CONFLICT (queue, state) DO UPDATE
SET entered = state_totals.entered + excluded.entered, exited = state_totals.exited + excluded.exited

-- name: prune_scan
-- The next jobs by id after the pruning cursor, whatever their state (the
-- caller picks the finished ones that are due).
SELECT id, name, queue, state, updated_at, created_at, version FROM jobs
WHERE id > :after ORDER BY id LIMIT :limit

-- name: pruning_marks
SELECT cursor_job, pruned_through FROM pruning

-- name: lock_pruning
-- Takes the write lock (this is a BEGIN IMMEDIATE transaction already).
SELECT cursor_job, pruned_through FROM pruning

-- name: prune_jobs
-- The jobs given as [id, version] pairs that have not moved since they were
-- read, are still finished, have no job waiting on them, no children left and
-- no event the rollup has not counted yet. SQLite numbers a new row max(id) + 1,
-- so the newest job and the job with the newest event stay: no id is ever
-- given twice (a client holding an id, or a stream's Last-Event-ID, stays right).
DELETE FROM jobs
WHERE (id, version) IN (
        SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(:pairs))
  AND state IN ({terminal})
  AND id < (SELECT max(id) FROM jobs)
  AND NOT EXISTS (SELECT 1 FROM events e
                  WHERE e.job_id = jobs.id AND e.id = (SELECT max(id) FROM events))
  AND NOT EXISTS (SELECT 1 FROM dependencies d WHERE d.depends_on = jobs.id)
  AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = jobs.id)
  AND NOT EXISTS (SELECT 1 FROM events e WHERE e.job_id = jobs.id AND e.id > :rolled_up_to)
RETURNING id, queue, state

-- name: prune_events
-- Returns the ids of the events removed (the largest marks how far pruning went).
DELETE FROM events WHERE job_id IN (SELECT value FROM json_each(?)) RETURNING id

-- name: prune_steps
DELETE FROM steps WHERE job_id IN (SELECT value FROM json_each(?))

-- name: prune_awakeables
DELETE FROM awakeables WHERE job_id IN (SELECT value FROM json_each(?))

-- name: prune_edges
DELETE FROM dependencies WHERE job_id IN (SELECT value FROM json_each(?))

-- name: count_pruned
INSERT INTO state_totals (queue, state, entered, exited, pruned)
VALUES (:queue, :state, 0, 0, :pruned)
ON CONFLICT (queue, state) DO UPDATE SET pruned = pruned + excluded.pruned

-- name: mark_pruning
UPDATE pruning SET cursor_job = coalesce(:cursor, cursor_job),
                   pruned_through = max(pruned_through, :through)

-- name: add_bulk
INSERT INTO bulk_operations (id, spec, progress, done, owner, created_at, heartbeat_at)
VALUES (:id, :spec, :progress, 0, :owner, :now, :now)

-- name: forget_bulks
-- Finished bulk operations asked for before a moment.
DELETE FROM bulk_operations WHERE done = 1 AND created_at < :before

-- name: bulk
SELECT id, spec, progress, done, owner, created_at, heartbeat_at FROM bulk_operations
WHERE id = :id

-- name: save_bulk
-- Only while the operation is unfinished and still this server's.
UPDATE bulk_operations SET progress = :progress, done = :done, heartbeat_at = :now
WHERE id = :id AND owner = :owner AND done = 0

-- name: take_bulks
-- Unfinished bulk operations whose server has been quiet since before a moment.
UPDATE bulk_operations SET owner = :owner, heartbeat_at = :now
WHERE done = 0 AND heartbeat_at < :quiet_since
RETURNING id, spec, progress, done, owner, created_at, heartbeat_at

-- name: schedules
SELECT name, expression, tz, paused, last_slot, last_job_id, seen_at FROM schedules ORDER BY name

-- name: schedule_seen
INSERT INTO schedules (name, expression, tz, paused, last_slot, seen_at)
VALUES (:name, :expression, :tz, 0, :first_slot, :now)
ON CONFLICT (name) DO UPDATE SET expression = excluded.expression, tz = excluded.tz,
    seen_at = excluded.seen_at
RETURNING name, expression, tz, paused, last_slot, last_job_id, seen_at

-- name: advance_schedule
UPDATE schedules SET last_slot = :last_slot, last_job_id = coalesce(:last_job_id, last_job_id)
WHERE name = :name AND last_slot < :last_slot

-- name: pause_schedule
UPDATE schedules SET paused = :paused WHERE name = :name AND paused <> :paused

-- name: moves_at
-- The moves of these jobs written at one instant (one transaction's), notes left out.
SELECT * FROM events
WHERE job_id IN (SELECT value FROM json_each(:ids)) AND at = :at
  AND (from_state IS NULL OR from_state <> to_state)
ORDER BY id

-- name: forget_declared_limits
DELETE FROM flow_limits
WHERE (kind = 'queue' AND name IN (SELECT value FROM json_each(:queues)))
   OR (kind = 'job' AND name IN (SELECT value FROM json_each(:names)))

-- name: declare_limit
INSERT INTO flow_limits (kind, name, concurrency, key, rate_count, rate_per, rate_key, seen_at)
VALUES (:kind, :name, :concurrency, :key, :rate_count, :rate_per, :rate_key, :now)
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
SELECT min(CASE WHEN r.next_start > :now THEN r.next_start END),
       coalesce(max(CASE WHEN r.next_start <= :now THEN 1 ELSE 0 END), 0)
FROM rate_limits AS r
WHERE r.next_start > :since
  AND ((r.kind = 'key'
        AND EXISTS (SELECT 1 FROM jobs WHERE state = {state:ready} AND rate_key = r.key))
    OR (r.kind = 'queue'
        AND EXISTS (SELECT 1 FROM jobs WHERE state = {state:ready} AND queue = r.key)))

-- name: forget_rates
DELETE FROM rate_limits
WHERE rowid IN (SELECT rowid FROM rate_limits WHERE next_start < :before LIMIT :limit)
