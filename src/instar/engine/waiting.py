"""Waiting on other jobs and on signals: what applied moves set off.

A move seldom stands alone. A job that ends releases the jobs waiting for it
(dependants start or fail, a joining parent wakes); a job that suspends on a
signal already answered, or on children already ended, wakes at once; a job
that leaves ``suspended`` drops the join edges of that suspension; a timer's
wake-up times out the signals it waited for. ``consequences`` plans all of
that *inside the transaction of the moves that caused it*, so a crash can
never keep one without the other.

Locks (PostgreSQL; SQLite has one writer anyway): a waiter is locked before
its awaited jobs are read, and a job that starts waiting reads what it
awaits ``FOR SHARE``. A job ending at the same moment either commits first
(and is seen ended) or waits for the waiter's commit (and then finds it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from instar.engine.moves import plan_move, system_error
from instar.lifecycle import State, is_terminal
from instar.models import Job
from instar.store.contract import Applied, Move, Settlement, Transaction
from instar.vocabulary import Actor, AwakeableState, DependencyKind, Trigger

_DEPENDENCY_FAILED = frozenset({State.FAILED, State.CANCELLED})


def sets_off_nothing(move: Move) -> bool:
    """Whether ``move`` sets off nothing by itself: what ``consequences`` (and
    the engine's replies to machines) would plan for it depends only on whether
    anything waits on its job, which the store sees as it applies it
    (``Store.apply_alone``)."""
    return (
        move.from_state is not State.SUSPENDED
        and not move.timing_out
        and not (move.to_state is State.SUSPENDED and (move.awaiting or move.joining))
    )


def consequences(tx: Transaction, moves: Sequence[Move], applied: Applied) -> list[Move]:
    """The moves that ``moves`` (as ``applied``) set off, with the bookkeeping
    they imply written through ``tx``; the caller applies them in ``tx`` too."""
    won = [move for move, ok in zip(moves, applied.won, strict=True) if ok]
    if not won:
        return []
    follow: list[Move] = []
    left = [m.job_id for m in won if m.from_state is State.SUSPENDED]
    if left:
        tx.remove_dependencies(left, DependencyKind.JOIN)
    for move in won:
        for awakeable_id in move.timing_out:
            tx.settle_awakeable(Settlement(awakeable_id, AwakeableState.TIMED_OUT))
        if move.to_state is State.SUSPENDED and (move.awaiting or move.joining):
            follow += _already_answered(tx, move)
    ended = sorted({m.job_id for m in won if is_terminal(m.to_state)} & applied.awaited)
    if ended:
        follow += release(tx, tx.waiting_on(ended))
    return follow


def release(tx: Transaction, waiters: Sequence[Job]) -> list[Move]:
    """Pending jobs whose dependencies all completed start (scheduled if their
    start is ahead); those with a failed or cancelled dependency fail; parents
    suspended on a join wake once every child has ended."""
    moves: list[Move] = []
    for seen in sorted(waiters, key=lambda job: job.id):
        waiter = tx.lock_job(seen.id)
        if waiter is None:
            continue
        if waiter.state is State.PENDING:
            move = _dependencies_settled(tx, waiter)
        elif waiter.state is State.SUSPENDED:
            move = _join_settled(tx, waiter, tx.awaited(waiter.id, DependencyKind.JOIN))
        else:
            move = None
        if move is not None:
            moves.append(move)
    return moves


def start_or_fail(tx: Transaction, created: Sequence[Job]) -> list[Move]:
    """New pending jobs whose dependencies have already ended move on at once."""
    moves = []
    for job in created:
        if job.state is State.PENDING:
            move = _dependencies_settled(tx, job, share_lock=True)
            if move is not None:
                moves.append(move)
    return moves


def _dependencies_settled(tx: Transaction, waiter: Job, *, share_lock: bool = False) -> Move | None:
    parents = tx.awaited(waiter.id, DependencyKind.AFTER, share_lock=share_lock)
    bad = next((p for p in parents if p.state in _DEPENDENCY_FAILED), None)
    if bad is not None:
        error = system_error(
            "DependencyFailed", f"dependency failed: job {bad.id} ({bad.name}) is {bad.state}"
        )
        return plan_move(
            waiter,
            State.FAILED,
            Trigger.DEPENDENCY_FAILED,
            actor=Actor.SYSTEM,
            detail={"dependency": bad.id, "state": bad.state.value},
            error_json=json.dumps(error),
        )
    if all(p.state is State.COMPLETED for p in parents):
        ahead = waiter.run_at is not None and waiter.run_at.timestamp() > tx.now
        start = State.SCHEDULED if ahead else State.READY
        return plan_move(waiter, start, Trigger.DEPENDENCIES_MET, actor=Actor.SYSTEM)
    return None


def _join_settled(tx: Transaction, parent: Job, children: Sequence[Job]) -> Move | None:
    if children and all(is_terminal(c.state) for c in children):
        return plan_move(parent, State.READY, Trigger.CHILDREN_ENDED, actor=Actor.SYSTEM)
    return None


def _already_answered(tx: Transaction, move: Move) -> list[Move]:
    """A job that just suspended on what has happened already wakes now."""
    job = tx.lock_job(move.job_id)
    if job is None or job.state is not State.SUSPENDED:
        return []
    if move.joining:
        tx.add_dependencies(move.job_id, move.joining, DependencyKind.JOIN)
        children = tx.awaited(move.job_id, DependencyKind.JOIN, share_lock=True)
        wake = _join_settled(tx, job, children)
        return [] if wake is None else [wake]
    assert move.awaiting is not None
    awakeable = tx.get_awakeable(move.awaiting)
    if awakeable is not None and awakeable.state is not AwakeableState.PENDING:
        detail = {"signal": awakeable.name}
        return [plan_move(job, State.READY, Trigger.SIGNAL, actor=Actor.SYSTEM, detail=detail)]
    return []
