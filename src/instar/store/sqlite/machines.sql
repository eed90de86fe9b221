-- Named queries of durable machines (instar.machines), SQLite.

-- name: machine_definition_save
-- A (name, version) is written once; the caller compares digests when it exists.
-- The writes the caller checks RETURN a row: a row count is not known yet in
-- PostgreSQL's pipeline mode (a worker's exchange, where replies are delivered).
INSERT INTO machine_definitions (name, version, body, digest, created_at)
VALUES (:name, :version, :body, :digest, :now)
ON CONFLICT (name, version) DO NOTHING
RETURNING version

-- name: machine_definition_get
SELECT version, body, digest FROM machine_definitions WHERE name = :name AND version = :version

-- name: machine_definition_latest
SELECT version, body, digest FROM machine_definitions WHERE name = :name
ORDER BY version DESC LIMIT 1

-- name: machine_definitions_all
SELECT name, version, digest, created_at FROM machine_definitions ORDER BY name, version

-- name: machine_instance_lock
-- SQLite has one writer: the transaction's BEGIN IMMEDIATE is the lock.
SELECT machine, key, version, state, context, seq, final, created_at, updated_at
FROM machine_instances WHERE machine = :machine AND key = :key

-- name: machine_instance_get
SELECT machine, key, version, state, context, seq, final, created_at, updated_at
FROM machine_instances WHERE machine = :machine AND key = :key

-- name: machine_instance_insert
INSERT INTO machine_instances (machine, key, version, state, context, seq, final,
                               created_at, updated_at)
VALUES (:machine, :key, :version, :state, :context, :seq, :final, :now, :now)
ON CONFLICT (machine, key) DO NOTHING
RETURNING seq

-- name: machine_instance_update
-- Compare-and-set on the seq the caller read (under its lock): never lost, never doubled.
-- RETURNING, not the row count: in PostgreSQL's pipeline mode (a worker's batch, where
-- replies are delivered) the count is unknown until the results are read.
UPDATE machine_instances
SET version = :version, state = :state, context = :context, seq = :seq, final = :final,
    updated_at = :now
WHERE machine = :machine AND key = :key AND seq = :expect_seq
RETURNING seq

-- name: machine_instances_list
-- A state filter is a leaf or a superstate: the path itself or any path under it.
SELECT machine, key, version, state, context, seq, final, created_at, updated_at
FROM machine_instances
WHERE machine = :machine
  AND (:state IS NULL OR state = :state OR (state > :state || '.' AND state < :state || '/'))
  AND (:after IS NULL OR key > :after)
ORDER BY key LIMIT :limit

-- name: machine_instance_counts
SELECT state, count(*) FROM machine_instances WHERE machine = :machine GROUP BY state

-- name: machine_history_insert
INSERT INTO machine_history (machine, key, seq, at, kind, event, from_state, to_state, data,
                             context, actor, transition, version, detail)
VALUES (:machine, :key, :seq, :at, :kind, :event, :from_state, :to_state, :data,
        :context, :actor, :transition, :version, :detail)

-- name: machine_history_since
SELECT machine, key, seq, at, kind, event, from_state, to_state, data, context, actor,
       transition, version, detail
FROM machine_history WHERE machine = :machine AND key = :key AND seq > :since
ORDER BY seq

-- name: machine_history_last
SELECT * FROM (
    SELECT machine, key, seq, at, kind, event, from_state, to_state, data, context, actor,
           transition, version, detail
    FROM machine_history WHERE machine = :machine AND key = :key AND seq > :since
    ORDER BY seq DESC LIMIT :last
) ORDER BY seq

-- name: machine_history_entry
SELECT machine, key, seq, at, kind, event, from_state, to_state, data, context, actor,
       transition, version, detail
FROM machine_history WHERE machine = :machine AND key = :key AND seq = :seq

-- name: machine_history_prune
-- Entries outside every kept bound, never an instance's last (the snapshot survives).
DELETE FROM machine_history
WHERE (machine, key, seq) IN (
    SELECT h.machine, h.key, h.seq FROM machine_history AS h
    JOIN machine_instances AS i ON i.machine = h.machine AND i.key = h.key
    WHERE h.machine = :machine AND h.seq < i.seq
      AND (:keep_last IS NULL OR h.seq <= i.seq - :keep_last)
      AND (:before IS NULL OR h.at < :before)
    LIMIT :limit)

-- name: machine_timers_arm
INSERT INTO machine_timers (machine, key, state, event, due_at, seq)
VALUES (:machine, :key, :state, :event, :due_at, :seq)

-- name: machine_timers_cancel
DELETE FROM machine_timers
WHERE machine = :machine AND key = :key AND state IN (SELECT value FROM json_each(:states))

-- name: machine_timers_cancel_all
DELETE FROM machine_timers WHERE machine = :machine AND key = :key

-- name: machine_timer_take
DELETE FROM machine_timers WHERE id = :id RETURNING id

-- name: machine_timers_due
-- Timers due at the same moment fire in the order they were armed.
SELECT id, machine, key, state, event, due_at, seq FROM machine_timers
WHERE due_at <= :now ORDER BY due_at, id LIMIT :limit

-- name: machine_timer_next
SELECT min(due_at) FROM machine_timers

-- name: machine_timers_of
SELECT id, machine, key, state, event, due_at, seq FROM machine_timers
WHERE machine = :machine AND key = :key ORDER BY due_at, id

-- name: machine_refusal_insert
INSERT INTO machine_refusals (machine, key, at, event, state, reason, detail, actor)
VALUES (:machine, :key, :now, :event, :state, :reason, :detail, :actor)

-- name: machine_refusals_trim
-- The log is bounded: an instance keeps its last :keep refusals.
DELETE FROM machine_refusals
WHERE machine = :machine AND key = :key
  AND id <= (SELECT id FROM machine_refusals WHERE machine = :machine AND key = :key
             ORDER BY id DESC LIMIT 1 OFFSET :keep)

-- name: machine_refusals_of
SELECT id, machine, key, at, event, state, reason, detail, actor FROM machine_refusals
WHERE machine = :machine AND key = :key ORDER BY id DESC LIMIT :limit

-- name: machine_send_get
SELECT outcome FROM machine_sends
WHERE machine = :machine AND key = :key AND idempotency_key = :idempotency_key

-- name: machine_send_save
INSERT INTO machine_sends (machine, key, idempotency_key, outcome, at)
VALUES (:machine, :key, :idempotency_key, :outcome, :now)

-- name: machine_replies_add
INSERT INTO machine_replies (job_id, machine, key, event) VALUES (:job_id, :machine, :key, :event)

-- name: machine_replies_take
DELETE FROM machine_replies WHERE job_id IN (SELECT value FROM json_each(:ids))
RETURNING job_id, machine, key, event

-- name: machine_retention_save
INSERT INTO machine_retention (machine, keep_last, keep_days) VALUES (:machine, :keep_last, :keep_days)
ON CONFLICT (machine) DO UPDATE SET keep_last = excluded.keep_last, keep_days = excluded.keep_days

-- name: machine_retentions
SELECT machine, keep_last, keep_days FROM machine_retention ORDER BY machine
