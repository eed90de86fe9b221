"""The SQLite store: one file, WAL, every write in a ``BEGIN IMMEDIATE`` transaction.

One connection per store, shared by the threads of one process behind a
lock: SQLite admits one writer at a time anyway, and a single connection
keeps ``PRAGMA data_version`` meaningful (it changes only when *another*
connection commits, which is how idle workers in other processes notice
new jobs).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from instar.errors import ConfigurationError
from instar.lifecycle import Kind, State, states_of_kind
from instar.models import Awakeable, Event, Job, QueueStats
from instar.store.contract import (
    BatchResult,
    ClaimRequest,
    Held,
    JobFilter,
    Move,
    NewJob,
    Note,
)
from instar.store.records import (
    awakeables_from,
    datetime_of,
    events_from,
    held_from,
    jobs_from,
    move_event,
    moves_json,
    new_job_record,
    note_params,
    refusal_note,
    rounds,
)
from instar.store.sql_blocks import load_blocks, load_migrations


def _sql_list(kind: Kind) -> str:
    return ", ".join(f"'{s.value}'" for s in sorted(states_of_kind(kind)))


# The SQL names sets of states by kind; the lifecycle table fills them in.
Q = {
    name: sql.replace("{leased}", _sql_list(Kind.LEASED)).replace(
        "{terminal}", _sql_list(Kind.TERMINAL)
    )
    for name, sql in load_blocks("instar.store.sqlite", "queries.sql").items()
}

SYNCHRONOUS_MODES = ("full", "normal", "extra", "off")


class SQLiteStore:
    supports_listen = False

    def __init__(self, path: str, *, synchronous: str = "full", busy_timeout: float = 30.0) -> None:
        if synchronous.lower() not in SYNCHRONOUS_MODES:
            raise ConfigurationError(
                f"synchronous={synchronous!r} is not a SQLite mode; use one of {SYNCHRONOUS_MODES}"
            )
        self.path = path
        parent = Path(path).parent
        if path != ":memory:" and not parent.is_dir():
            raise ConfigurationError(
                f"cannot open SQLite database {path!r}: folder {str(parent)!r} does not exist; "
                "create it or pass another --database"
            )
        try:
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
            )
            self._conn.execute(Q["pragmas"])
            self._conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        except sqlite3.DatabaseError as exc:
            raise ConfigurationError(
                f"cannot open SQLite database {path!r}: {exc}; check the path and its permissions"
            ) from None
        self._lock = threading.RLock()

    # -- plumbing -------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE takes the write lock up front
        so that two processes never deadlock upgrading a read lock."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def migrate(self) -> int:
        with self._write() as conn:
            conn.execute(Q["create_migrations_table"])
            done = {row[0] for row in conn.execute(Q["applied_migrations"])}
            version = max(done, default=0)
            for number, name, sql in load_migrations("instar.store.sqlite.migrations"):
                if number in done:
                    continue
                for statement in _split_statements(sql):
                    conn.execute(statement)
                conn.execute(Q["record_migration"], (number, name))
                version = number
        return version

    # -- jobs -----------------------------------------------------------

    def watch(self, listener: Callable[[], None]) -> None:
        raise ConfigurationError(
            "SQLite has no notifications; workers notice other processes' commits "
            "through PRAGMA data_version (store.supports_listen is False)"
        )

    def insert_jobs(
        self, jobs: Sequence[NewJob], now: float, actor: str | None, connection: Any = None
    ) -> list[Job]:
        if connection is not None:
            raise ConfigurationError(
                "enqueueing inside your own transaction (connection=...) needs the "
                "PostgreSQL backend"
            )
        rows = [
            (
                j.name,
                j.queue,
                j.state.value,
                j.priority,
                j.max_attempts,
                j.args_json,
                j.key,
                j.run_at,
                j.lease_seconds,
                j.pause_timeout,
                j.parent_id,
                now,
                now,
            )
            for j in jobs
        ]
        with self._write() as conn:
            if len(jobs) > 1 and all(j.key is None for j in jobs):
                # No key can collide, so ids are consecutive under the write lock:
                # one executemany instead of a statement per job.
                first = conn.execute(Q["max_job_id"]).fetchone()[0] + 1
                conn.executemany(Q["insert_job"], rows)
                ids = list(range(first, first + len(rows)))
                inserted = [True] * len(rows)
            else:
                ids, inserted = [], []
                for row, job in zip(rows, jobs, strict=True):
                    cursor = conn.execute(Q["insert_job"], row)
                    if cursor.rowcount:
                        ids.append(int(cursor.lastrowid or 0))
                        inserted.append(True)
                    else:
                        existing = conn.execute(Q["job_by_key"], (job.key,)).fetchone()
                        ids.append(existing[0])
                        inserted.append(False)
            conn.executemany(
                Q["add_dependency"],
                [
                    (job_id, parent, "after")
                    for job_id, job, new in zip(ids, jobs, inserted, strict=True)
                    if new
                    for parent in job.after
                ],
            )
            conn.executemany(
                Q["insert_event"],
                [
                    (job_id, now, None, job.state.value, "enqueued", 0, None, actor, None)
                    for job_id, job, new in zip(ids, jobs, inserted, strict=True)
                    if new
                ],
            )
            if all(inserted):
                created = datetime_of(now)
                return [new_job_record(i, j, created) for i, j in zip(ids, jobs, strict=True)]
            found = jobs_from(conn.execute(Q["jobs_in"], (json.dumps(ids),)))
        by_id = {job.id: job for job in found}
        return [by_id[i] for i in ids]

    def get_job(self, job_id: int) -> Job | None:
        with self._lock:
            found = jobs_from(self._conn.execute(Q["get_job"], (job_id,)))
        return found[0] if found else None

    def list_jobs(self, where: JobFilter) -> list[Job]:
        params = {
            "state": None if where.state is None else where.state.value,
            "queue": where.queue,
            "name": where.name,
            "limit": where.limit,
        }
        with self._lock:
            return jobs_from(self._conn.execute(Q["list_jobs"], params))

    def count_by_state(self) -> dict[State, int]:
        with self._lock:
            rows = self._conn.execute(Q["count_by_state"]).fetchall()
        return {State(state): count for state, count in rows}

    def events(self, job_id: int) -> list[Event]:
        with self._lock:
            return events_from(self._conn.execute(Q["events_of_job"], (job_id,)))

    # -- state changes --------------------------------------------------

    def commit_batch(
        self,
        moves: Sequence[Move],
        notes: Sequence[Note],
        claim: ClaimRequest | None,
        now: float,
    ) -> BatchResult:
        claimed: list[Job] = []
        with self._write() as conn:
            # Notes first: a job's progress belongs before the move that ends its run.
            for note in notes:
                conn.execute(Q["insert_note"], note_params(note, now))
                if note.progress_json is not None:
                    conn.execute(
                        Q["set_progress"], {"job_id": note.job_id, "progress": note.progress_json}
                    )
            applied = self._apply_moves(conn, moves, now)
            events: list[tuple[Any, ...]] = []
            if claim is not None and claim.limit > 0:
                params: dict[str, Any] = {"worker": claim.worker, "now": now, "limit": claim.limit}
                if claim.queues is None:
                    cursor = conn.execute(Q["claim_any_queue"], params)
                else:
                    params["queues"] = json.dumps(list(claim.queues))
                    cursor = conn.execute(Q["claim_from_queues"], params)
                claimed = sorted(jobs_from(cursor), key=lambda j: (-j.priority, j.id))
                events.extend(
                    (j.id, now, "ready", "running", "claimed", j.attempt, claim.worker, None, None)
                    for j in claimed
                )
            conn.executemany(Q["insert_event"], events)
        return BatchResult(applied, claimed)

    def _apply_moves(
        self, conn: sqlite3.Connection, moves: Sequence[Move], now: float
    ) -> list[bool]:
        """Apply moves in the open transaction, each with its event, in rounds of
        distinct jobs; a refused report from a stale lease leaves a note."""
        applied = [False] * len(moves)
        index = {id(move): i for i, move in enumerate(moves)}
        events = []
        for round_ in rounds(moves):
            won = {
                row[0]
                for row in conn.execute(Q["move_batch"], {"moves": moves_json(round_), "now": now})
            }
            for move in round_:
                ok = move.job_id in won
                applied[index[id(move)]] = ok
                if ok:
                    events.append(move_event(move, now))
                elif move.guard_token is not None:
                    conn.execute(Q["insert_note"], note_params(refusal_note(move), now))
        conn.executemany(Q["insert_event"], events)
        return applied

    def request_cancel_if_leased(self, job_id: int, now: float, actor: str | None) -> bool:
        with self._write() as conn:
            params = {"job_id": job_id, "now": now}
            if conn.execute(Q["request_cancel"], params).rowcount != 1:
                return False
            note = Note(job_id, "cancel-requested", None, actor, None)
            conn.execute(Q["insert_note"], note_params(note, now))
        return True

    def heartbeat(self, worker: str, now: float) -> list[Held]:
        with self._write() as conn:
            rows = conn.execute(Q["heartbeat"], {"worker": worker, "now": now}).fetchall()
        return [held_from(row) for row in rows]

    def request_pause_if_leased(self, job_id: int, now: float, actor: str | None) -> bool:
        with self._write() as conn:
            if conn.execute(Q["request_pause"], {"job_id": job_id, "now": now}).rowcount != 1:
                return False
            note = Note(job_id, "pause-requested", None, actor, None)
            conn.execute(Q["insert_note"], note_params(note, now))
        return True

    # -- durable execution --------------------------------------------------

    def steps(self, job_id: int) -> dict[str, str | None]:
        with self._lock:
            return dict(self._conn.execute(Q["steps_of_job"], (job_id,)).fetchall())

    def save_step(
        self, job_id: int, lease_token: str, name: str, result_json: str | None, now: float
    ) -> Held | None:
        params = {"job_id": job_id, "token": lease_token, "name": name, "now": now}
        with self._write() as conn:
            conn.execute(Q["save_step"], {**params, "result": result_json})
            row = conn.execute(Q["held"], {"job_id": job_id, "token": lease_token}).fetchone()
            if row is not None:
                detail = json.dumps({"step": name})
                note = Note(job_id, "step", None, None, detail)
                conn.execute(Q["insert_note"], note_params(note, now))
        return None if row is None else held_from(row)

    def save_checkpoint(
        self, job_id: int, lease_token: str, data_json: str, now: float
    ) -> Held | None:
        params = {"job_id": job_id, "token": lease_token, "data": data_json, "now": now}
        with self._write() as conn:
            row = conn.execute(Q["save_checkpoint"], params).fetchone()
            if row is not None:
                note = Note(job_id, "checkpoint", None, None, data_json)
                conn.execute(Q["insert_note"], note_params(note, now))
        return None if row is None else held_from(row)

    def awakeable(self, job_id: int, name: str, new_id: str, now: float) -> Awakeable:
        with self._write() as conn:
            conn.execute(Q["create_awakeable"], (new_id, job_id, name, now))
            return awakeables_from(conn.execute(Q["awakeable_by_name"], (job_id, name)))[0]

    def get_awakeable(self, awakeable_id: str) -> Awakeable | None:
        with self._lock:
            found = awakeables_from(self._conn.execute(Q["awakeable_by_id"], (awakeable_id,)))
        return found[0] if found else None

    def set_awakeable_timeout(self, awakeable_id: str, timeout_at: float) -> None:
        with self._write() as conn:
            conn.execute(Q["set_awakeable_timeout"], (timeout_at, awakeable_id))

    def settle_awakeable(
        self,
        awakeable_id: str,
        state: str,
        value_json: str | None,
        reason: str | None,
        wake: Move | None,
        now: float,
    ) -> bool:
        params = {
            "id": awakeable_id,
            "state": state,
            "value": value_json,
            "reason": reason,
            "now": now,
        }
        with self._write() as conn:
            if conn.execute(Q["settle_awakeable"], params).rowcount != 1:
                return False
            if wake is not None:
                self._apply_moves(conn, [wake], now)
        return True

    def awakeables_of(self, job_id: int) -> list[Awakeable]:
        with self._lock:
            return awakeables_from(self._conn.execute(Q["awakeables_of_job"], (job_id,)))

    def add_dependencies(self, job_id: int, on: Sequence[int], kind: str) -> None:
        with self._write() as conn:
            if kind == "join":
                conn.execute(Q["remove_dependencies"], (job_id, kind))
            conn.executemany(Q["add_dependency"], [(job_id, other, kind) for other in on])

    def remove_dependencies(self, job_id: int, kind: str) -> None:
        with self._write() as conn:
            conn.execute(Q["remove_dependencies"], (job_id, kind))

    def dependencies_of(self, job_id: int, kind: str) -> list[Job]:
        with self._lock:
            return jobs_from(self._conn.execute(Q["dependencies_of"], (job_id, kind)))

    def waiting_on(self, job_ids: Sequence[int]) -> list[Job]:
        with self._lock:
            return jobs_from(self._conn.execute(Q["waiting_on"], (json.dumps(list(job_ids)),)))

    def stranded_waiters(self, limit: int) -> list[Job]:
        with self._lock:
            return jobs_from(self._conn.execute(Q["stranded_waiters"], (limit,)))

    def children_of(self, job_id: int) -> list[Job]:
        with self._lock:
            return jobs_from(self._conn.execute(Q["children_of"], (job_id,)))

    def pause_queue(self, queue: str, now: float) -> bool:
        with self._write() as conn:
            return conn.execute(Q["pause_queue"], (queue, now)).rowcount == 1

    def resume_queue(self, queue: str) -> bool:
        with self._write() as conn:
            return conn.execute(Q["resume_queue"], (queue,)).rowcount == 1

    def queue_stats(self) -> list[QueueStats]:
        with self._lock:
            rows = self._conn.execute(Q["queue_counts"]).fetchall()
            paused = {row[0] for row in self._conn.execute(Q["paused_queues"])}
        counts: dict[str, dict[State, int]] = {queue: {} for queue in paused}
        for queue, state, count in rows:
            counts.setdefault(queue, {})[State(state)] = count
        return [QueueStats(q, q in paused, counts[q]) for q in sorted(counts)]

    # -- timers and maintenance -----------------------------------------

    def due_timers(self, now: float, limit: int) -> list[Job]:
        with self._lock:
            return jobs_from(self._conn.execute(Q["due_timers"], {"now": now, "limit": limit}))

    def expired_leases(self, now: float, limit: int) -> list[Job]:
        with self._lock:
            return jobs_from(self._conn.execute(Q["expired_leases"], {"now": now, "limit": limit}))

    def next_timer_at(self) -> float | None:
        with self._lock:
            value = self._conn.execute(Q["next_timer_at"]).fetchone()[0]
        return None if value is None else float(value)

    def try_lead(self, role: str, holder: str, now: float, ttl: float) -> bool:
        params = {"role": role, "holder": holder, "now": now, "ttl": ttl}
        with self._write() as conn:
            return conn.execute(Q["try_lead"], params).rowcount == 1

    def change_marker(self) -> int:
        with self._lock:
            return int(self._conn.execute(Q["data_version"]).fetchone()[0])


# -- rows to records ------------------------------------------------------


def _split_statements(script: str) -> list[str]:
    """Migrations hold plain DDL; sqlite3.complete_statement finds where each ends."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    return statements
