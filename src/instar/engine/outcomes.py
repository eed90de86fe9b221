"""How a run ends: a closed set of outcomes, and the moves each one makes.

The worker turns whatever its handler did into exactly one ``Outcome``;
``outcome_moves`` matches it exhaustively (a new outcome that is not handled
fails the type check) and plans the moves, guarded by the run's lease token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, assert_never

from instar.engine.moves import error_record, moved, plan_move, system_error
from instar.lifecycle import State, can_transition
from instar.models import Job
from instar.payload import cut, encode
from instar.retry import Retry
from instar.store.contract import Move
from instar.vocabulary import Trigger


@dataclass(frozen=True, slots=True)
class Returned:
    """The handler returned ``value`` (stored as the job's JSON result)."""

    value: Any


@dataclass(frozen=True, slots=True)
class Raised:
    """The handler raised ``error``: retried, failed or paused by the retry policy."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The run stopped because someone cancelled the job."""


@dataclass(frozen=True, slots=True)
class Released:
    """The worker shut down before the handler finished: back to ready, uncounted."""


@dataclass(frozen=True, slots=True)
class Suspended:
    """The handler waits: until ``wake_at`` (epoch seconds), the awakeable
    ``awaiting``, or every job in ``joining``. The attempt is not counted."""

    wake_at: float | None
    detail: dict[str, Any]
    awaiting: str | None = None
    joining: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Paused:
    """The run stopped at a checkpoint because someone asked to pause the job."""


Outcome = Returned | Raised | Cancelled | Released | Suspended | Paused


def outcome_moves(
    job: Job, outcome: Outcome, *, retry: Retry, now: float, max_payload_bytes: int
) -> list[Move]:
    """The moves that end a run of ``job`` as ``outcome`` says, guarded by its lease."""
    match outcome:
        case Cancelled():
            return [plan_move(job, State.CANCELLED, Trigger.CANCELLED, by_lease=True)]
        case Released():
            return [_uncounted(job, State.READY, Trigger.RELEASED)]
        case Suspended(wake_at=wake_at, detail=detail, awaiting=awaiting, joining=joining):
            return [
                _uncounted(
                    job,
                    State.SUSPENDED,
                    Trigger.SUSPENDED,
                    detail=detail,
                    wake_at=wake_at,
                    awaiting=awaiting,
                    joining=joining,
                )
            ]
        case Paused():
            deadline = now + job.pause_timeout
            return [_uncounted(job, State.PAUSED, Trigger.PAUSED, pause_deadline=deadline)]
        case Returned(value=value):
            try:
                result_json = encode(
                    value, what="the handler's return value", max_bytes=max_payload_bytes
                )
            except Exception as exc:  # a result we cannot store fails the job, never vanishes
                return _failure_moves(job, exc, retry, now)
            return _completion_moves(job, result_json)
        case Raised(error=error):
            return _failure_moves(job, error, retry, now)
        case _:
            assert_never(outcome)


def refused_report_moves(moves: Sequence[Move], error: Exception) -> list[Move]:
    """What to write instead of a run's report the database refused: the job
    fails (no retry: the same report would be refused again), its error saying
    why. Empty when the table allows no failure from the state the job is in."""
    first = moves[0]
    if not can_transition(first.from_state, State.FAILED):
        return []
    record = system_error(
        "ReportRefused",
        cut(f"the worker could not store this job's report ({first.trigger}): {error}", 4096),
    )
    record_json = json.dumps(record)
    return [
        replace(
            first,
            to_state=State.FAILED,
            trigger=Trigger.FAILED.value,
            result_json=None,
            error_json=record_json,
            detail_json=record_json,
            next_retry_at=None,
            wake_at=None,
            pause_deadline=None,
            rerun=False,
            clear_progress=False,
            awaiting=None,
            joining=(),
            timing_out=(),
        )
    ]


def _completion_moves(job: Job, result_json: str) -> list[Move]:
    moves = []
    if job.state is State.SERVING:
        # A service returned on its own: it passes through stopping on its way out.
        moves.append(plan_move(job, State.STOPPING, Trigger.RETURNED, by_lease=True))
        job = moved(job, moves[0])
    moves.append(
        plan_move(job, State.COMPLETED, Trigger.COMPLETED, by_lease=True, result_json=result_json)
    )
    return moves


def _failure_moves(job: Job, error: BaseException, retry: Retry, now: float) -> list[Move]:
    record = error_record(error)
    error_json = json.dumps(record)
    failed: dict[str, Any] = {"by_lease": True, "detail": record, "error_json": error_json}
    retriable = retry.is_retriable(error) and can_transition(job.state, State.BACKING_OFF)
    if not retriable:
        return [plan_move(job, State.FAILED, Trigger.FAILED, **failed)]
    if job.attempt < job.max_attempts:
        next_retry_at = now + retry.delay(job.attempt)
        return [
            plan_move(
                job,
                State.BACKING_OFF,
                Trigger.RETRY_SCHEDULED,
                by_lease=True,
                detail={**record, "next_retry_at": next_retry_at},
                error_json=error_json,
                next_retry_at=next_retry_at,
            )
        ]
    if retry.on_exhausted == "pause":
        deadline = now + job.pause_timeout
        return [
            plan_move(
                job, State.PAUSED, Trigger.RETRIES_EXHAUSTED, pause_deadline=deadline, **failed
            )
        ]
    return [plan_move(job, State.FAILED, Trigger.RETRIES_EXHAUSTED, **failed)]


def _uncounted(job: Job, to_state: State, trigger: Trigger, **changes: Any) -> Move:
    """A run that ended without trying the work to its end does not use up an attempt:
    the job keeps showing the attempt it ran, and its next run continues it."""
    return plan_move(job, to_state, trigger, by_lease=True, rerun=True, **changes)
