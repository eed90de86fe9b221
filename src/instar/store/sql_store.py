"""What both SQL backends do the same way, over their own named queries.

sqlite3 and psycopg connections answer ``execute``, ``cursor().executemany``,
``rowcount`` and ``fetchall`` alike, and each backend's ``queries.sql`` takes
the same parameters under the same block names. So a store method is written
once here; a backend supplies its queries, its transactions, its claim and
its bulk insert, and the little that differs (how a list is passed, whether
a commit must wake other processes).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from instar.lifecycle import State
from instar.models import Awakeable, Event, Job, QueueStats
from instar.store.contract import BatchResult, ClaimRequest, Held, JobFilter, Move, Note
from instar.store.records import (
    awakeables_from,
    events_from,
    held_from,
    jobs_from,
    move_event,
    moves_json,
    note_params,
    refusal_note,
    rounds,
)


class SQLStore(ABC):
    """The shared body of the SQLite and PostgreSQL stores."""

    Q: Mapping[str, str]

    # -- what a backend supplies -------------------------------------------------

    @abstractmethod
    def _tx(self) -> AbstractContextManager[Any]:
        """A connection inside one write transaction, committed on success."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Any]:
        """A connection for reads."""

    @abstractmethod
    def _claim(self, conn: Any, claim: ClaimRequest, now: float) -> Any:
        """Run the backend's claim statement; returns a cursor over the claimed rows."""

    @abstractmethod
    def _id_list(self, ids: Sequence[int]) -> Any:
        """A list of ids as the backend's SQL takes it (a JSON text, an array)."""

    @abstractmethod
    def _jobs_became_ready(self, conn: Any) -> None:
        """Called in a transaction that made jobs ready: wake other processes if
        the backend needs telling."""

    # -- reads ---------------------------------------------------------------------

    def get_job(self, job_id: int) -> Job | None:
        with self._read() as conn:
            found = jobs_from(conn.execute(self.Q["get_job"], (job_id,)))
        return found[0] if found else None

    def list_jobs(self, where: JobFilter) -> list[Job]:
        params = {
            "state": None if where.state is None else where.state.value,
            "queue": where.queue,
            "name": where.name,
            "limit": where.limit,
        }
        with self._read() as conn:
            return jobs_from(conn.execute(self.Q["list_jobs"], params))

    def count_by_state(self) -> dict[State, int]:
        with self._read() as conn:
            rows = conn.execute(self.Q["count_by_state"]).fetchall()
        return {State(state): count for state, count in rows}

    def events(self, job_id: int) -> list[Event]:
        with self._read() as conn:
            return events_from(conn.execute(self.Q["events_of_job"], (job_id,)))

    # -- state changes -------------------------------------------------------------

    def commit_batch(
        self,
        moves: Sequence[Move],
        notes: Sequence[Note],
        claim: ClaimRequest | None,
        now: float,
    ) -> BatchResult:
        claimed: list[Job] = []
        with self._tx() as conn:
            # Notes first: a job's progress belongs before the move that ends its run.
            self._write_notes(conn, notes, now)
            applied = self._apply_moves(conn, moves, now)
            if claim is not None and claim.limit > 0:
                rows = jobs_from(self._claim(conn, claim, now))
                claimed = sorted(rows, key=lambda j: (-j.priority, j.id))
                if claimed:
                    conn.cursor().executemany(
                        self.Q["insert_event"],
                        [
                            (
                                j.id,
                                now,
                                "ready",
                                "running",
                                "claimed",
                                j.attempt,
                                claim.worker,
                                None,
                                None,
                            )
                            for j in claimed
                        ],
                    )
        return BatchResult(applied, claimed)

    def _write_notes(self, conn: Any, notes: Sequence[Note], now: float) -> None:
        if not notes:
            return
        conn.cursor().executemany(self.Q["insert_note"], [note_params(n, now) for n in notes])
        progress = [
            {"job_id": n.job_id, "progress": n.progress_json}
            for n in notes
            if n.progress_json is not None
        ]
        if progress:
            conn.cursor().executemany(self.Q["set_progress"], progress)

    def _apply_moves(self, conn: Any, moves: Sequence[Move], now: float) -> list[bool]:
        """Apply moves in the open transaction, each with its event, in rounds of
        distinct jobs (one UPDATE per round); a refused report from a stale
        lease leaves a note instead."""
        applied = [False] * len(moves)
        index = {id(move): i for i, move in enumerate(moves)}
        events = []
        refusals = []
        for round_ in rounds(moves):
            params = {"moves": moves_json(round_), "now": now}
            won = {row[0] for row in conn.execute(self.Q["move_batch"], params)}
            for move in round_:
                ok = move.job_id in won
                applied[index[id(move)]] = ok
                if ok:
                    events.append(move_event(move, now))
                elif move.guard_token is not None:
                    refusals.append(note_params(refusal_note(move), now))
        if events:
            conn.cursor().executemany(self.Q["insert_event"], events)
        if refusals:
            conn.cursor().executemany(self.Q["insert_note"], refusals)
        if any(ok and m.to_state is State.READY for m, ok in zip(moves, applied, strict=True)):
            self._jobs_became_ready(conn)
        return applied

    def request_cancel_if_leased(self, job_id: int, now: float, actor: str | None) -> bool:
        return self._flag("request_cancel", "cancel-requested", job_id, now, actor)

    def request_pause_if_leased(self, job_id: int, now: float, actor: str | None) -> bool:
        return self._flag("request_pause", "pause-requested", job_id, now, actor)

    def _flag(self, query: str, trigger: str, job_id: int, now: float, actor: str | None) -> bool:
        """Set a request flag on a leased job, with its note; its worker acts on it."""
        with self._tx() as conn:
            if conn.execute(self.Q[query], {"job_id": job_id, "now": now}).rowcount != 1:
                return False
            note = Note(job_id, trigger, None, actor, None)
            conn.execute(self.Q["insert_note"], note_params(note, now))
        return True

    def heartbeat(self, worker: str, job_ids: Sequence[int], now: float) -> list[Held]:
        params = {"worker": worker, "now": now, "ids": self._id_list(job_ids)}
        with self._tx() as conn:
            rows = conn.execute(self.Q["heartbeat"], params).fetchall()
        return [held_from(row) for row in rows]

    # -- durable execution -----------------------------------------------------------

    def steps(self, job_id: int) -> dict[str, str | None]:
        with self._read() as conn:
            return dict(conn.execute(self.Q["steps_of_job"], (job_id,)).fetchall())

    def save_step(
        self,
        job_id: int,
        lease_token: str,
        name: str,
        result_json: str | None,
        now: float,
        worker: str | None = None,
    ) -> Held | None:
        params = {
            "job_id": job_id,
            "token": lease_token,
            "name": name,
            "now": now,
            "result": result_json,
        }
        with self._tx() as conn:
            conn.execute(self.Q["save_step"], params)
            row = conn.execute(self.Q["held"], {"job_id": job_id, "token": lease_token}).fetchone()
            if row is not None:
                note = Note(job_id, "step", worker, None, json.dumps({"step": name}))
                conn.execute(self.Q["insert_note"], note_params(note, now))
        return None if row is None else held_from(row)

    def save_checkpoint(
        self,
        job_id: int,
        lease_token: str,
        data_json: str,
        now: float,
        worker: str | None = None,
    ) -> Held | None:
        params = {"job_id": job_id, "token": lease_token, "data": data_json, "now": now}
        with self._tx() as conn:
            row = conn.execute(self.Q["save_checkpoint"], params).fetchone()
            if row is not None:
                note = Note(job_id, "checkpoint", worker, None, data_json)
                conn.execute(self.Q["insert_note"], note_params(note, now))
        return None if row is None else held_from(row)

    def awakeable(self, job_id: int, name: str, new_id: str, now: float) -> Awakeable:
        with self._tx() as conn:
            conn.execute(self.Q["create_awakeable"], (new_id, job_id, name, now))
            return awakeables_from(conn.execute(self.Q["awakeable_by_name"], (job_id, name)))[0]

    def get_awakeable(self, awakeable_id: str) -> Awakeable | None:
        with self._read() as conn:
            found = awakeables_from(conn.execute(self.Q["awakeable_by_id"], (awakeable_id,)))
        return found[0] if found else None

    def set_awakeable_timeout(self, awakeable_id: str, timeout_at: float) -> None:
        with self._tx() as conn:
            conn.execute(self.Q["set_awakeable_timeout"], (timeout_at, awakeable_id))

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
        with self._tx() as conn:
            if conn.execute(self.Q["settle_awakeable"], params).rowcount != 1:
                return False
            if wake is not None:
                self._apply_moves(conn, [wake], now)
        return True

    def awakeables_of(self, job_id: int) -> list[Awakeable]:
        with self._read() as conn:
            return awakeables_from(conn.execute(self.Q["awakeables_of_job"], (job_id,)))

    def add_dependencies(self, job_id: int, on: Sequence[int], kind: str) -> None:
        with self._tx() as conn:
            if kind == "join":
                conn.execute(self.Q["remove_dependencies"], (job_id, kind))
            edges = [(job_id, other, kind) for other in on]
            conn.cursor().executemany(self.Q["add_dependency"], edges)

    def remove_dependencies(self, job_id: int, kind: str) -> None:
        with self._tx() as conn:
            conn.execute(self.Q["remove_dependencies"], (job_id, kind))

    def dependencies_of(self, job_id: int, kind: str) -> list[Job]:
        with self._read() as conn:
            return jobs_from(conn.execute(self.Q["dependencies_of"], (job_id, kind)))

    def waiting_on(self, job_ids: Sequence[int]) -> list[Job]:
        with self._read() as conn:
            return jobs_from(conn.execute(self.Q["waiting_on"], (self._id_list(job_ids),)))

    def stranded_waiters(self, limit: int) -> list[Job]:
        with self._read() as conn:
            return jobs_from(conn.execute(self.Q["stranded_waiters"], (limit,)))

    def children_of(self, job_id: int) -> list[Job]:
        with self._read() as conn:
            return jobs_from(conn.execute(self.Q["children_of"], (job_id,)))

    def pause_queue(self, queue: str, now: float) -> bool:
        with self._tx() as conn:
            return bool(conn.execute(self.Q["pause_queue"], (queue, now)).rowcount == 1)

    def resume_queue(self, queue: str) -> bool:
        with self._tx() as conn:
            resumed = bool(conn.execute(self.Q["resume_queue"], (queue,)).rowcount == 1)
            self._jobs_became_ready(conn)
        return resumed

    def queue_stats(self) -> list[QueueStats]:
        with self._read() as conn:
            rows = conn.execute(self.Q["queue_counts"]).fetchall()
            paused = {row[0] for row in conn.execute(self.Q["paused_queues"])}
        counts: dict[str, dict[State, int]] = {queue: {} for queue in paused}
        for queue, state, count in rows:
            counts.setdefault(queue, {})[State(state)] = count
        return [QueueStats(q, q in paused, counts[q]) for q in sorted(counts)]

    # -- timers and maintenance -------------------------------------------------------

    def due_timers(self, now: float, limit: int) -> list[Job]:
        with self._read() as conn:
            return jobs_from(conn.execute(self.Q["due_timers"], {"now": now, "limit": limit}))

    def expired_leases(self, now: float, limit: int) -> list[Job]:
        with self._read() as conn:
            return jobs_from(conn.execute(self.Q["expired_leases"], {"now": now, "limit": limit}))

    def next_timer_at(self) -> float | None:
        with self._read() as conn:
            row = conn.execute(self.Q["next_timer_at"]).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def try_lead(self, role: str, holder: str, now: float, ttl: float) -> bool:
        params = {"role": role, "holder": holder, "now": now, "ttl": ttl}
        with self._tx() as conn:
            return bool(conn.execute(self.Q["try_lead"], params).rowcount == 1)
