-- Named queries of durable machines (instar.machines), PostgreSQL.

-- name: machine_definition_save
-- A (name, version) is written once; the caller compares digests when it exists.
-- The writes the caller checks RETURN a row: a row count is not known yet in
-- PostgreSQL's pipeline mode (a worker's exchange, where replies are delivered).
INSERT INTO machine_definitions (name, version, body, digest, created_at)
VALUES (%(name)s, %(version)s, %(body)s, %(digest)s, %(now)s)
ON CONFLICT (name, version) DO NOTHING
RETURNING version

-- name: machine_definition_get
SELECT version, body, digest FROM machine_definitions WHERE name = %(name)s AND version = %(version)s

-- name: machine_definition_latest
SELECT version, body, digest FROM machine_definitions WHERE name = %(name)s
ORDER BY version DESC LIMIT 1

-- name: machine_definitions_all
SELECT name, version, digest, created_at FROM machine_definitions ORDER BY name, version

-- name: machine_instance_lock
-- Events on one instance apply one after another: the row lock orders them.
SELECT machine, key, version, state, context, seq, final, created_at, updated_at
FROM machine_instances WHERE machine = %(machine)s AND key = %(key)s
FOR UPDATE

-- name: machine_instance_get
SELECT machine, key, version, state, context, seq, final, created_at, updated_at
FROM machine_instances WHERE machine = %(machine)s AND key = %(key)s

-- name: machine_instance_insert
INSERT INTO machine_instances (machine, key, version, state, context, seq, final,
                               created_at, updated_at)
VALUES (%(machine)s, %(key)s, %(version)s, %(state)s, %(context)s, %(seq)s, %(final)s, %(now)s, %(now)s)
ON CONFLICT (machine, key) DO NOTHING
RETURNING seq

-- name: machine_instance_update
-- Compare-and-set on the seq the caller read (under its lock): never lost, never doubled.
-- RETURNING, not the row count: in PostgreSQL's pipeline mode (a worker's batch, where
-- replies are delivered) the count is unknown until the results are read.
UPDATE machine_instances
SET version = %(version)s, state = %(state)s, context = %(context)s, seq = %(seq)s, final = %(final)s,
    updated_at = %(now)s
WHERE machine = %(machine)s AND key = %(key)s AND seq = %(expect_seq)s
RETURNING seq

-- name: machine_instances_list
-- A state filter is a leaf or a superstate: the path itself or any path under it.
SELECT machine, key, version, state, context, seq, final, created_at, updated_at
FROM machine_instances
WHERE machine = %(machine)s
  AND (%(state)s::text IS NULL OR state = %(state)s::text
       OR (state > %(state)s::text || '.' AND state < %(state)s::text || '/'))
  AND (%(after)s::text IS NULL OR key > %(after)s::text)
ORDER BY key LIMIT %(limit)s

-- name: machine_instance_counts
SELECT state, count(*) FROM machine_instances WHERE machine = %(machine)s GROUP BY state

-- name: machine_history_insert
INSERT INTO machine_history (machine, key, seq, at, kind, event, from_state, to_state, data,
                             context, actor, transition, version, detail)
VALUES (%(machine)s, %(key)s, %(seq)s, %(at)s, %(kind)s, %(event)s, %(from_state)s, %(to_state)s, %(data)s,
        %(context)s, %(actor)s, %(transition)s, %(version)s, %(detail)s)

-- name: machine_history_since
SELECT machine, key, seq, at, kind, event, from_state, to_state, data, context, actor,
       transition, version, detail
FROM machine_history WHERE machine = %(machine)s AND key = %(key)s AND seq > %(since)s
ORDER BY seq

-- name: machine_history_last
SELECT * FROM (
    SELECT machine, key, seq, at, kind, event, from_state, to_state, data, context, actor,
           transition, version, detail
    FROM machine_history WHERE machine = %(machine)s AND key = %(key)s AND seq > %(since)s
    ORDER BY seq DESC LIMIT %(last)s
) AS last ORDER BY seq

-- name: machine_history_entry
SELECT machine, key, seq, at, kind, event, from_state, to_state, data, context, actor,
       transition, version, detail
FROM machine_history WHERE machine = %(machine)s AND key = %(key)s AND seq = %(seq)s

-- name: machine_history_prune
-- Entries outside every kept bound, never an instance's last (the snapshot survives).
DELETE FROM machine_history
WHERE (machine, key, seq) IN (
    SELECT h.machine, h.key, h.seq FROM machine_history AS h
    JOIN machine_instances AS i ON i.machine = h.machine AND i.key = h.key
    WHERE h.machine = %(machine)s AND h.seq < i.seq
      AND (%(keep_last)s::integer IS NULL OR h.seq <= i.seq - %(keep_last)s::integer)
      AND (%(before)s::float8 IS NULL OR h.at < %(before)s::float8)
    LIMIT %(limit)s)

-- name: machine_timers_arm
INSERT INTO machine_timers (machine, key, state, event, due_at, seq)
VALUES (%(machine)s, %(key)s, %(state)s, %(event)s, %(due_at)s, %(seq)s)

-- name: machine_timers_cancel
DELETE FROM machine_timers
WHERE machine = %(machine)s AND key = %(key)s AND state = ANY(%(states)s)

-- name: machine_timers_cancel_all
DELETE FROM machine_timers WHERE machine = %(machine)s AND key = %(key)s

-- name: machine_timer_take
DELETE FROM machine_timers WHERE id = %(id)s RETURNING id

-- name: machine_timers_due
-- Timers due at the same moment fire in the order they were armed.
SELECT id, machine, key, state, event, due_at, seq FROM machine_timers
WHERE due_at <= %(now)s ORDER BY due_at, id LIMIT %(limit)s

-- name: machine_timer_next
SELECT min(due_at) FROM machine_timers

-- name: machine_timers_of
SELECT id, machine, key, state, event, due_at, seq FROM machine_timers
WHERE machine = %(machine)s AND key = %(key)s ORDER BY due_at, id

-- name: machine_refusal_insert
INSERT INTO machine_refusals (machine, key, at, event, state, reason, detail, actor)
VALUES (%(machine)s, %(key)s, %(now)s, %(event)s, %(state)s, %(reason)s, %(detail)s, %(actor)s)

-- name: machine_refusals_trim
-- The log is bounded: an instance keeps its last %(keep)s refusals.
DELETE FROM machine_refusals
WHERE machine = %(machine)s AND key = %(key)s
  AND id <= (SELECT id FROM machine_refusals WHERE machine = %(machine)s AND key = %(key)s
             ORDER BY id DESC LIMIT 1 OFFSET %(keep)s)

-- name: machine_refusals_of
SELECT id, machine, key, at, event, state, reason, detail, actor FROM machine_refusals
WHERE machine = %(machine)s AND key = %(key)s ORDER BY id DESC LIMIT %(limit)s

-- name: machine_send_get
SELECT outcome FROM machine_sends
WHERE machine = %(machine)s AND key = %(key)s AND idempotency_key = %(idempotency_key)s

-- name: machine_send_save
INSERT INTO machine_sends (machine, key, idempotency_key, outcome, at)
VALUES (%(machine)s, %(key)s, %(idempotency_key)s, %(outcome)s, %(now)s)

-- name: machine_replies_add
INSERT INTO machine_replies (job_id, machine, key, event) VALUES (%(job_id)s, %(machine)s, %(key)s, %(event)s)

-- name: machine_replies_take
DELETE FROM machine_replies WHERE job_id = ANY(%(ids)s)
RETURNING job_id, machine, key, event

-- name: machine_retention_save
INSERT INTO machine_retention (machine, keep_last, keep_days) VALUES (%(machine)s, %(keep_last)s, %(keep_days)s)
ON CONFLICT (machine) DO UPDATE SET keep_last = excluded.keep_last, keep_days = excluded.keep_days

-- name: machine_retentions
SELECT machine, keep_last, keep_days FROM machine_retention ORDER BY machine

-- name: machine_advance
-- One accepted event in one statement: the instance compare-and-set on its seq,
-- its history entry, the timers of the states it left dropped and those of the
-- states it entered armed, each only if the compare-and-set won (all CTEs see
-- the same snapshot: the DELETE never sees the rows the INSERT adds).
WITH moved AS (
    UPDATE machine_instances
    SET version = %(version)s, state = %(state)s, context = %(context)s, seq = %(seq)s,
        final = %(final)s, updated_at = %(now)s
    WHERE machine = %(machine)s AND key = %(key)s AND seq = %(expect_seq)s
    RETURNING seq
), entry AS (
    INSERT INTO machine_history (machine, key, seq, at, kind, event, from_state, to_state,
                                 data, context, actor, transition, version, detail)
    SELECT %(machine)s, %(key)s, %(seq)s, %(now)s, %(kind)s, %(event)s, %(from_state)s,
           %(state)s, %(data)s, %(context)s, %(actor)s, %(transition)s, %(version)s, %(detail)s
    FROM moved
), dropped AS (
    DELETE FROM machine_timers
    WHERE machine = %(machine)s AND key = %(key)s AND EXISTS (SELECT 1 FROM moved)
      AND (%(cancel_all)s OR state = ANY(%(cancel)s::text[]))
), armed AS (
    INSERT INTO machine_timers (machine, key, state, event, due_at, seq)
    SELECT %(machine)s, %(key)s, a.state, a.event, a.due_at, %(seq)s
    FROM moved, unnest(%(arm_states)s::text[], %(arm_events)s::text[],
                       %(arm_due)s::float8[]) AS a (state, event, due_at)
)
SELECT seq FROM moved

-- name: machine_advance_untimed
-- machine_advance when no timer is dropped or armed (the states left and entered
-- have none): the instance and its history entry alone, about a sixth less of the
-- server's time and no arrays to send.
WITH moved AS (
    UPDATE machine_instances
    SET version = %(version)s, state = %(state)s, context = %(context)s, seq = %(seq)s,
        final = %(final)s, updated_at = %(now)s
    WHERE machine = %(machine)s AND key = %(key)s AND seq = %(expect_seq)s
    RETURNING seq
)
INSERT INTO machine_history (machine, key, seq, at, kind, event, from_state, to_state,
                             data, context, actor, transition, version, detail)
SELECT %(machine)s, %(key)s, %(seq)s, %(now)s, %(kind)s, %(event)s, %(from_state)s,
       %(state)s, %(data)s, %(context)s, %(actor)s, %(transition)s, %(version)s, %(detail)s
FROM moved
RETURNING seq
