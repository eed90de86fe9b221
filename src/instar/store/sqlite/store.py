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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from instar.clock import to_datetime
from instar.errors import ConfigurationError
from instar.lifecycle import Kind, State, states_of_kind
from instar.models import Event, Job, Progress
from instar.payload import decode
from instar.store.contract import BatchResult, ClaimRequest, JobFilter, Move, NewJob, Note
from instar.store.sql_blocks import load_blocks, load_migrations

_LEASED_SQL = ", ".join(f"'{s.value}'" for s in sorted(states_of_kind(Kind.LEASED)))
Q = {
    name: sql.replace("{leased}", _LEASED_SQL)
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
        self._conn.row_factory = sqlite3.Row
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

    def insert_jobs(self, jobs: Sequence[NewJob], now: float, actor: str | None) -> list[Job]:
        rows = [
            {
                "name": j.name,
                "queue": j.queue,
                "state": j.state.value,
                "priority": j.priority,
                "max_attempts": j.max_attempts,
                "args": j.args_json,
                "key": j.key,
                "run_at": j.run_at,
                "lease_seconds": j.lease_seconds,
                "now": now,
            }
            for j in jobs
        ]
        with self._write() as conn:
            if all(j.key is None for j in jobs):
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
                        ids.append(existing["id"])
                        inserted.append(False)
            conn.executemany(
                Q["insert_event"],
                [
                    (job_id, now, None, job.state.value, "enqueued", 0, None, actor, None)
                    for job_id, job, new in zip(ids, jobs, inserted, strict=True)
                    if new
                ],
            )
            if all(inserted):
                return [_new_job(i, j, now) for i, j in zip(ids, jobs, strict=True)]
            found = conn.execute(Q["jobs_in"], (json.dumps(ids),)).fetchall()
        by_id = {row["id"]: _job(row) for row in found}
        return [by_id[i] for i in ids]

    def get_job(self, job_id: int) -> Job | None:
        with self._lock:
            row = self._conn.execute(Q["get_job"], (job_id,)).fetchone()
        return None if row is None else _job(row)

    def list_jobs(self, where: JobFilter) -> list[Job]:
        params = {
            "state": None if where.state is None else where.state.value,
            "queue": where.queue,
            "name": where.name,
            "limit": where.limit,
        }
        with self._lock:
            rows = self._conn.execute(Q["list_jobs"], params).fetchall()
        return [_job(row) for row in rows]

    def count_by_state(self) -> dict[State, int]:
        with self._lock:
            rows = self._conn.execute(Q["count_by_state"]).fetchall()
        return {State(state): count for state, count in rows}

    def events(self, job_id: int) -> list[Event]:
        with self._lock:
            rows = self._conn.execute(Q["events_of_job"], (job_id,)).fetchall()
        return [_event(row) for row in rows]

    # -- state changes --------------------------------------------------

    def commit_batch(
        self,
        moves: Sequence[Move],
        notes: Sequence[Note],
        claim: ClaimRequest | None,
        now: float,
    ) -> BatchResult:
        applied: list[bool] = []
        claimed: list[Job] = []
        with self._write() as conn:
            # Notes first: a job's progress belongs before the move that ends its run.
            for note in notes:
                conn.execute(Q["insert_note"], _note_params(note, now))
                if note.progress_json is not None:
                    conn.execute(
                        Q["set_progress"], {"job_id": note.job_id, "progress": note.progress_json}
                    )
            events = []
            for move in moves:
                ok = conn.execute(Q["move"], _move_params(move, now)).rowcount == 1
                applied.append(ok)
                if ok:
                    events.append(
                        (
                            move.job_id,
                            now,
                            move.from_state.value,
                            move.to_state.value,
                            move.trigger,
                            move.attempt,
                            move.worker,
                            move.actor,
                            move.detail_json,
                        )
                    )
                elif move.guard_token is not None:
                    # A report from a worker that no longer holds the lease: keep a trace.
                    conn.execute(
                        Q["insert_note"],
                        _note_params(_refusal_note(move), now),
                    )
            if claim is not None and claim.limit > 0:
                params: dict[str, Any] = {"worker": claim.worker, "now": now, "limit": claim.limit}
                if claim.queues is None:
                    rows = conn.execute(Q["claim_any_queue"], params).fetchall()
                else:
                    params["queues"] = json.dumps(list(claim.queues))
                    rows = conn.execute(Q["claim_from_queues"], params).fetchall()
                claimed = sorted((_job(r) for r in rows), key=lambda j: (-j.priority, j.id))
                events.extend(
                    (j.id, now, "ready", "running", "claimed", j.attempt, claim.worker, None, None)
                    for j in claimed
                )
            conn.executemany(Q["insert_event"], events)
        return BatchResult(applied, claimed)

    def request_cancel_if_leased(self, job_id: int, now: float, actor: str | None) -> bool:
        with self._write() as conn:
            params = {"job_id": job_id, "now": now}
            if conn.execute(Q["request_cancel"], params).rowcount != 1:
                return False
            note = Note(job_id, "cancel-requested", None, actor, None)
            conn.execute(Q["insert_note"], _note_params(note, now))
        return True

    def heartbeat(self, worker: str, now: float) -> list[tuple[int, bool]]:
        with self._write() as conn:
            rows = conn.execute(Q["heartbeat"], {"worker": worker, "now": now}).fetchall()
        return [(row[0], bool(row[1])) for row in rows]

    # -- timers and maintenance -----------------------------------------

    def due_timers(self, now: float, limit: int) -> list[Job]:
        with self._lock:
            rows = self._conn.execute(Q["due_timers"], {"now": now, "limit": limit}).fetchall()
        return [_job(row) for row in rows]

    def expired_leases(self, now: float, limit: int) -> list[Job]:
        with self._lock:
            rows = self._conn.execute(Q["expired_leases"], {"now": now, "limit": limit}).fetchall()
        return [_job(row) for row in rows]

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


def _move_params(move: Move, now: float) -> dict[str, Any]:
    return {
        "job_id": move.job_id,
        "from_state": move.from_state.value,
        "to_state": move.to_state.value,
        "now": now,
        "attempt": move.attempt,
        "max_attempts": move.max_attempts,
        "run_at": move.run_at,
        "next_retry_at": move.next_retry_at,
        "worker": move.worker,
        "lease_token": move.lease_token,
        "lease_expires_at": move.lease_expires_at,
        "result": move.result_json,
        "error": move.error_json,
        "version": move.version,
        "guard_token": move.guard_token,
    }


def _refusal_note(move: Move) -> Note:
    detail = json.dumps({"refused": move.to_state.value, "reason": "stale lease token"})
    return Note(move.job_id, f"refused-{move.trigger}", move.worker, move.actor, detail)


def _note_params(note: Note, now: float) -> dict[str, Any]:
    return {
        "job_id": note.job_id,
        "now": now,
        "trigger": note.trigger,
        "worker": note.worker,
        "actor": note.actor,
        "detail": note.detail_json,
    }


def _new_job(job_id: int, new: NewJob, now: float) -> Job:
    created = to_datetime(now)
    assert created is not None
    return Job(
        id=job_id,
        name=new.name,
        queue=new.queue,
        state=new.state,
        priority=new.priority,
        attempt=0,
        max_attempts=new.max_attempts,
        args=json.loads(new.args_json),
        result=None,
        error=None,
        key=new.key,
        run_at=to_datetime(new.run_at),
        next_retry_at=None,
        created_at=created,
        updated_at=created,
        worker=None,
        progress=None,
        lease_seconds=new.lease_seconds,
        lease_expires_at=None,
        cancel_requested=False,
        version=0,
    )


def _job(row: sqlite3.Row) -> Job:
    progress = decode(row["progress"])
    created = to_datetime(row["created_at"])
    updated = to_datetime(row["updated_at"])
    assert created is not None and updated is not None
    return Job(
        id=row["id"],
        name=row["name"],
        queue=row["queue"],
        state=State(row["state"]),
        priority=row["priority"],
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        args=json.loads(row["args"]),
        result=decode(row["result"]),
        error=decode(row["error"]),
        key=row["key"],
        run_at=to_datetime(row["run_at"]),
        next_retry_at=to_datetime(row["next_retry_at"]),
        created_at=created,
        updated_at=updated,
        worker=row["worker"],
        progress=None if progress is None else Progress(**progress),
        lease_seconds=row["lease_seconds"],
        lease_expires_at=to_datetime(row["lease_expires_at"]),
        cancel_requested=bool(row["cancel_requested"]),
        version=row["version"],
        lease_token=row["lease_token"],
    )


def _event(row: sqlite3.Row) -> Event:
    at = to_datetime(row["at"])
    assert at is not None
    return Event(
        id=row["id"],
        job_id=row["job_id"],
        at=at,
        from_state=None if row["from_state"] is None else State(row["from_state"]),
        to_state=State(row["to_state"]),
        trigger=row["trigger"],
        attempt=row["attempt"],
        worker=row["worker"],
        actor=row["actor"],
        detail=decode(row["detail"]),
    )
