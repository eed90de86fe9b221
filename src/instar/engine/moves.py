"""Planning one move: the lifecycle table's check, then the job's new values.

``plan_move`` is the one door every state change passes: it refuses what the
table refuses (``InvalidTransition``) and describes the rest as a ``Move``
for the store to compare-and-set.
"""

from __future__ import annotations

import traceback
from dataclasses import replace
from datetime import datetime
from typing import Any

from instar.errors import InvalidTransition
from instar.lifecycle import KINDS, Kind, State, can_transition, is_leased
from instar.models import Job
from instar.payload import MAX_ERROR_MESSAGE, MAX_TRACEBACK, cut, encode
from instar.store.contract import Move
from instar.vocabulary import Trigger

_HELD_BY_NOBODY = frozenset({Kind.INITIAL, Kind.TIMER, Kind.CLAIMABLE, Kind.WAITING, Kind.PARKED})
"""Kinds of state in which no worker holds the job (leased, transient and terminal
states keep the worker that held it last)."""


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def plan_move(
    job: Job,
    to_state: State,
    trigger: Trigger,
    *,
    by_lease: bool = False,
    actor: str | None = None,
    detail: Any = None,
    **changes: Any,
) -> Move:
    """Refuse what the table refuses, else describe the move with the job's new
    values (unchanged unless given in ``changes``, a Move field each).

    ``by_lease``: guarded by the job's lease token (a worker's report) rather
    than its version (an operator or timer). Raises ``InvalidTransition``.
    """
    if not can_transition(job.state, to_state):
        raise InvalidTransition(job.id, job.state.value, to_state.value)
    # Built field by field, then ``changes`` set on it: no dict of values to
    # merge and unpack (half the cost, on every run's end).
    releases = is_leased(job.state) and not is_leased(to_state)
    move = Move(
        job_id=job.id,
        from_state=job.state,
        to_state=to_state,
        trigger=trigger.value,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        run_at=_epoch(job.run_at),
        # Timer columns belong to the state that set them.
        next_retry_at=_epoch(job.next_retry_at) if to_state is State.BACKING_OFF else None,
        wake_at=_epoch(job.wake_at) if to_state is State.SUSPENDED else None,
        pause_deadline=_epoch(job.pause_deadline) if to_state is State.PAUSED else None,
        # No worker holds it now: show none.
        worker=None if KINDS[to_state] in _HELD_BY_NOBODY else job.worker,
        lease_token=None if releases else job.lease_token,
        lease_expires_at=None if releases else _epoch(job.lease_expires_at),
        result_json=None if job.result is None else encode(job.result, what="result"),
        # A completed job shows no error: earlier attempts' errors stay in the timeline.
        error_json=(
            None
            if job.error is None or to_state is State.COMPLETED
            else encode(job.error, what="error")
        ),
        rerun=job.rerun,
        # Progress belongs to a run: a job waiting for its next one shows none.
        clear_progress=to_state is State.READY,
        version=None if by_lease else job.version,
        guard_token=job.lease_token if by_lease else None,
        actor=actor,
        reporter=job.worker if by_lease else None,
        detail_json=None if detail is None else encode(detail, what="event detail"),
    )
    for name, value in changes.items():
        setattr(move, name, value)  # an unknown name raises AttributeError (slots)
    return move


def error_record(error: BaseException) -> dict[str, Any]:
    """What a failure leaves in the job and its event: type, message, traceback.

    Never raises, whatever the exception: one whose ``__str__`` raises is named
    by its type; a message over ``MAX_ERROR_MESSAGE`` characters or a traceback
    over ``MAX_TRACEBACK`` is cut, with a marker saying so (the traceback keeps
    its end, where the error was raised)."""
    return {
        "type": type(error).__qualname__,
        "message": cut(_message(error), MAX_ERROR_MESSAGE),
        "traceback": cut(_traceback(error), MAX_TRACEBACK, keep="end"),
    }


def _message(error: BaseException) -> str:
    try:
        return str(error)
    except Exception as exc:
        return f"<the message of this {type(error).__qualname__} could not be read: {exc!r}>"


def _traceback(error: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(error))
    except Exception:
        lines = traceback.format_tb(error.__traceback__)
        return "".join(lines) + f"{type(error).__qualname__}: <unreadable message>\n"


def system_error(kind: str, message: str) -> dict[str, Any]:
    """An error Instar records itself (a lost worker, a failed dependency): no traceback."""
    return {"type": kind, "message": message, "traceback": ""}


def moved(job: Job, move: Move) -> Job:
    """The job as ``move`` leaves it, so that a second move can follow in the same batch."""
    return replace(
        job,
        state=move.to_state,
        version=job.version + 1,
        lease_token=move.lease_token,
        lease_expires_at=None,
    )
