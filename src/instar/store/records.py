"""Turning rows into records and moves into parameters: shared by every backend.

Rows are plain tuples; columns are found by name once per query, so a
backend's ``SELECT *`` may list them in any order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from math import isfinite
from typing import Any, Protocol

from instar.clock import to_datetime
from instar.lifecycle import State
from instar.models import Awakeable, Event, Job, Progress
from instar.payload import decode, safe_text
from instar.store.contract import Held, Move, NewJob, Note, Recheck
from instar.vocabulary import AwakeableState


class Cursor(Protocol):
    """What both drivers' cursors offer: the rows, then their description (read
    after the rows: in psycopg's pipeline mode it is known only once they came)."""

    @property
    def description(self) -> Any: ...

    def fetchall(self) -> Any: ...


def rounds(moves: Sequence[Move]) -> list[list[Move]]:
    """Split moves so no job appears twice in a round: the batch UPDATE applies
    one row per job, and a second move of the same job must see the first."""
    rounds: list[list[Move]] = []
    seen: dict[int, int] = {}
    for move in moves:
        n = seen.get(move.job_id, 0)
        seen[move.job_id] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(move)
    return rounds


def move_rows(moves: Sequence[Move]) -> list[tuple[Any, ...]]:
    """The moves as rows, in the column order ``move_batch`` reads (0-17) and
    then what their events need (18-21: trigger, reporter, actor, detail).
    Raises ``ValueError`` for a time that is not a finite number (NaN or
    infinity: no database orders them, and SQLite would store NaN as NULL)."""
    rows = []
    for m in moves:
        for at in (m.run_at, m.next_retry_at, m.lease_expires_at, m.wake_at, m.pause_deadline):
            if at is not None and not isfinite(at):
                raise ValueError(f"job {m.job_id}: a time of its {m.trigger} move is {at}")
        rows.append(
            (
                m.job_id,
                m.from_state.value,
                m.to_state.value,
                m.attempt,
                m.max_attempts,
                m.run_at,
                m.next_retry_at,
                m.worker,
                m.lease_token,
                m.lease_expires_at,
                m.result_json,
                m.error_json,
                m.version,
                m.guard_token,
                m.wake_at,
                m.pause_deadline,
                m.rerun,
                m.clear_progress,
                m.trigger,
                m.reporter,
                _text(m.actor),
                m.detail_json,
            )
        )
    return rows


def moves_json(moves: Sequence[Move]) -> str:
    """``move_rows`` as a JSON array of arrays."""
    return json.dumps(move_rows(moves))


def _text(value: str | None) -> str | None:
    return None if value is None else safe_text(value)


def note_params(note: Note, now: float) -> dict[str, Any]:
    return {
        "job_id": note.job_id,
        "now": now,
        "trigger": note.trigger,
        "worker": note.worker,
        "actor": _text(note.actor),
        "detail": note.detail_json,
    }


def new_job_params(job: NewJob, now: float) -> tuple[Any, ...]:
    """The parameters of ``insert_job`` (either backend) for one new job."""
    return (
        job.name,
        job.queue,
        job.state.value,
        job.priority,
        job.max_attempts,
        job.args_json,
        job.key,
        job.run_at,
        job.lease_seconds,
        job.pause_timeout,
        job.parent_id,
        now,
        now,
        job.limit_key,
        job.rate_key,
        job.trace_context,
    )


def new_job_record(job_id: int, new: NewJob, created: datetime) -> Job:
    return Job(
        id=job_id,
        name=new.name,
        queue=new.queue,
        state=new.state,
        priority=new.priority,
        attempt=0,
        max_attempts=new.max_attempts,
        args=new.args,
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
        pause_timeout=new.pause_timeout,
        parent_id=new.parent_id,
        trace_context=new.trace_context,
    )


def jobs_from(cursor: Cursor) -> list[Job]:
    """Rows of ``SELECT *``/``RETURNING *`` as Jobs; columns found by name once per query."""
    rows = cursor.fetchall()
    at = {d[0]: i for i, d in enumerate(cursor.description)}
    (i_id, i_name, i_queue, i_state, i_priority, i_attempt, i_max, i_args, i_result, i_error,
     i_key, i_run_at, i_retry_at, i_created, i_updated, i_worker, i_token, i_expires,
     i_lease, i_cancel, i_progress, i_version, i_checkpoint, i_pause, i_wake, i_deadline,
     i_pause_timeout, i_parent, i_rerun, i_trace) = (
        at[c] for c in (
            "id", "name", "queue", "state", "priority", "attempt", "max_attempts", "args",
            "result", "error", "key", "run_at", "next_retry_at", "created_at", "updated_at",
            "worker", "lease_token", "lease_expires_at", "lease_seconds", "cancel_requested",
            "progress", "version", "checkpoint", "pause_requested", "wake_at",
            "pause_deadline", "pause_timeout", "parent_id", "rerun", "trace_context",
        )
    )  # fmt: skip
    jobs = []
    # Rows of one batch share their times (claimed at one moment, enqueued together):
    # each distinct epoch becomes a datetime once.
    seen: dict[float, datetime] = {}

    def at_time(epoch: float) -> datetime:
        found = seen.get(epoch)
        if found is None:
            found = seen[epoch] = datetime.fromtimestamp(epoch, UTC)
        return found

    def when(epoch: float | None) -> datetime | None:
        return None if epoch is None else at_time(epoch)

    for row in rows:
        progress = row[i_progress]
        jobs.append(
            Job(
                id=row[i_id],
                name=row[i_name],
                queue=row[i_queue],
                state=State(row[i_state]),
                priority=row[i_priority],
                attempt=row[i_attempt],
                max_attempts=row[i_max],
                args=json.loads(row[i_args]),
                result=decode(row[i_result]),
                error=decode(row[i_error]),
                key=row[i_key],
                run_at=when(row[i_run_at]),
                next_retry_at=when(row[i_retry_at]),
                created_at=at_time(row[i_created]),
                updated_at=at_time(row[i_updated]),
                worker=row[i_worker],
                progress=None if progress is None else Progress(**json.loads(progress)),
                lease_seconds=row[i_lease],
                lease_expires_at=when(row[i_expires]),
                cancel_requested=bool(row[i_cancel]),
                version=row[i_version],
                lease_token=row[i_token],
                checkpoint=decode(row[i_checkpoint]),
                pause_requested=bool(row[i_pause]),
                wake_at=when(row[i_wake]),
                pause_deadline=when(row[i_deadline]),
                pause_timeout=row[i_pause_timeout],
                parent_id=row[i_parent],
                rerun=bool(row[i_rerun]),
                trace_context=row[i_trace],
            )
        )
    return jobs


def held_from(row: tuple[Any, ...]) -> Held:
    return Held(row[0], State(row[1]), bool(row[2]), bool(row[3]))


def recheck_from(row: Sequence[Any]) -> Recheck:
    """A row of the ``recheck`` query: id, held, cancel, pause, queue paused."""
    return Recheck(row[0], bool(row[1]), bool(row[2]), bool(row[3]), bool(row[4]))


def in_claim_order(jobs: Iterable[Job]) -> list[Job]:
    """Claimed jobs in the order the claim took them (the claim's RETURNING
    order is not defined): highest priority first, then the oldest."""
    return sorted(jobs, key=lambda j: (-j.priority, j.id))


def awakeables_from(cursor: Cursor) -> list[Awakeable]:
    rows = cursor.fetchall()
    at = {d[0]: i for i, d in enumerate(cursor.description)}
    return [
        Awakeable(
            id=row[at["id"]],
            job_id=row[at["job_id"]],
            name=row[at["name"]],
            state=AwakeableState(row[at["state"]]),
            value=decode(row[at["value"]]),
            reason=row[at["reason"]],
            timeout_at=to_datetime(row[at["timeout_at"]]),
            created_at=datetime_of(row[at["created_at"]]),
            resolved_at=to_datetime(row[at["resolved_at"]]),
        )
        for row in rows
    ]


def datetime_of(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def events_from(cursor: Cursor) -> list[Event]:
    rows = cursor.fetchall()
    at = {d[0]: i for i, d in enumerate(cursor.description)}
    return [
        Event(
            id=row[at["id"]],
            job_id=row[at["job_id"]],
            at=datetime_of(row[at["at"]]),
            from_state=None if row[at["from_state"]] is None else State(row[at["from_state"]]),
            to_state=State(row[at["to_state"]]),
            trigger=row[at["trigger"]],
            attempt=row[at["attempt"]],
            worker=row[at["worker"]],
            actor=row[at["actor"]],
            detail=decode(row[at["detail"]]),
        )
        for row in rows
    ]
