"""The only writer of job state: table check, then compare-and-set, then event.

Every state change in Instar is built by ``plan_move`` (which consults the
lifecycle table and raises ``InvalidTransition`` for anything else) and
written by the store's ``commit_batch`` in one transaction with its event.
Operator verbs re-read the job and retry when they lose a race to another
writer; a worker's reports are guarded by its lease token instead.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from instar.clock import Clock, SystemClock
from instar.errors import InvalidTransition, JobNotFound
from instar.lifecycle import ENTRY_STATES, State, can_transition, is_leased
from instar.models import Event, Job
from instar.payload import encode
from instar.retry import Retry
from instar.store.contract import BatchResult, ClaimRequest, JobFilter, Move, NewJob, Note, Store

_RACE_RETRIES = 20
SYSTEM = "system"  # the actor of moves nobody asked for: timers, lease rescue


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def plan_move(
    job: Job,
    to_state: State,
    trigger: str,
    *,
    by_lease: bool = False,
    actor: str | None = None,
    detail: Any = None,
    **changes: Any,
) -> Move:
    """The one door for a state change: refuse what the table refuses, else
    describe the move with the job's new values (unchanged unless given)."""
    if not can_transition(job.state, to_state):
        raise InvalidTransition(job.id, job.state.value, to_state.value)
    values: dict[str, Any] = {
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "run_at": _epoch(job.run_at),
        "next_retry_at": _epoch(job.next_retry_at),
        "worker": job.worker,
        "lease_token": job.lease_token,
        "lease_expires_at": _epoch(job.lease_expires_at),
        "result_json": None if job.result is None else encode(job.result, what="result"),
        "error_json": None if job.error is None else encode(job.error, what="error"),
    }
    if is_leased(job.state) and not is_leased(to_state):
        values.update(lease_token=None, lease_expires_at=None)
    values.update(changes)
    return Move(
        job_id=job.id,
        from_state=job.state,
        to_state=to_state,
        trigger=trigger,
        version=None if by_lease else job.version,
        guard_token=job.lease_token if by_lease else None,
        actor=actor,
        detail_json=None if detail is None else encode(detail, what="event detail"),
        **values,
    )


def error_record(error: BaseException) -> dict[str, Any]:
    """What a failure leaves in the job and its event: type, message, traceback."""
    return {
        "type": type(error).__qualname__,
        "message": str(error),
        "traceback": "".join(traceback.format_exception(error)),
    }


@dataclass(frozen=True)
class TimerReport:
    fired: int
    rescued: int


class Engine:
    """Reads go straight to the store; every write passes through ``plan_move``."""

    def __init__(self, store: Store, clock: Clock | None = None) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (from any thread) whenever this engine makes a job
        ready; workers in this process use it to wake at once. Returns the undo."""
        self._listeners = [*self._listeners, listener]

        def unsubscribe() -> None:
            self._listeners = [f for f in self._listeners if f is not listener]

        return unsubscribe

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    # -- reads ------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        job = self.store.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def jobs(self, where: JobFilter) -> list[Job]:
        return self.store.list_jobs(where)

    def history(self, job_id: int) -> list[Event]:
        self.get(job_id)
        return self.store.events(job_id)

    # -- creating ---------------------------------------------------------

    def enqueue(self, jobs: Sequence[NewJob], actor: str | None = None) -> list[Job]:
        for job in jobs:
            if job.state not in ENTRY_STATES:
                raise InvalidTransition(0, "(new)", job.state.value, "not a state a job starts in")
        created = self.store.insert_jobs(jobs, self.clock.now(), actor)
        self._notify()
        return created

    # -- operator verbs -----------------------------------------------------

    def cancel(self, job_id: int, actor: str | None = None) -> Job:
        """Cancel at once, or, for a job a worker holds, ask that worker to stop."""
        for _ in range(_RACE_RETRIES):
            job = self.get(job_id)
            if is_leased(job.state):
                if job.cancel_requested or self.store.request_cancel_if_leased(
                    job_id, self.clock.now(), actor
                ):
                    return self.get(job_id)
                continue
            move = plan_move(job, State.CANCELLED, "cancelled", actor=actor)
            if self._apply_one(move):
                return self.get(job_id)
        raise InvalidTransition(
            job_id, job.state.value, State.CANCELLED.value, "too much contention"
        )

    def retry(self, job_id: int, actor: str | None = None) -> Job:
        """An operator's retry: a failed job runs again with a fresh attempt count."""
        for _ in range(_RACE_RETRIES):
            job = self.get(job_id)
            if job.state is not State.FAILED:
                raise InvalidTransition(
                    job_id, job.state.value, State.READY.value, "only a failed job can be retried"
                )
            move = plan_move(
                job,
                State.READY,
                "retried",
                actor=actor,
                detail={"previous_attempts": job.attempt},
                attempt=0,
                next_retry_at=None,
            )
            if self._apply_one(move):
                self._notify()
                return self.get(job_id)
        raise InvalidTransition(job_id, job.state.value, State.READY.value, "too much contention")

    def _apply_one(self, move: Move) -> bool:
        return self.store.commit_batch([move], [], None, self.clock.now()).applied[0]

    # -- the worker's side ----------------------------------------------------

    def exchange(
        self, finished: Sequence[Move], notes: Sequence[Note], claim: ClaimRequest | None
    ) -> BatchResult:
        """Report finished jobs and claim new ones in a single transaction."""
        return self.store.commit_batch(finished, notes, claim, self.clock.now())

    def heartbeat(self, worker: str) -> list[tuple[int, bool]]:
        return self.store.heartbeat(worker, self.clock.now())

    # -- maintenance --------------------------------------------------------

    def fire_due_timers(self, limit: int = 1000) -> int:
        """scheduled -> ready at run_at; backing-off -> ready at next_retry_at."""
        moves = [
            plan_move(job, State.READY, "due", actor=SYSTEM)
            for job in self.store.due_timers(self.clock.now(), limit)
        ]
        return self._apply_all(moves)

    def rescue_expired_leases(self, limit: int = 1000) -> int:
        """A leased job whose lease ran out lost its worker: orphan it, then
        re-queue it, or fail it after too many losses, or cancel it if asked."""
        moves: list[Move] = []
        for job in self.store.expired_leases(self.clock.now(), limit):
            orphan = plan_move(job, State.ORPHANED, "lease-expired", actor=SYSTEM)
            moves.append(orphan)
            orphaned = _after(job, orphan)
            if job.cancel_requested:
                moves.append(plan_move(orphaned, State.CANCELLED, "cancelled", actor=SYSTEM))
            elif job.attempt >= job.max_attempts:
                error = {
                    "type": "WorkerLost",
                    "message": f"the worker was lost on each of {job.attempt} attempts",
                    "traceback": "",
                }
                moves.append(
                    plan_move(
                        orphaned,
                        State.FAILED,
                        "too-many-losses",
                        actor=SYSTEM,
                        detail=error,
                        error_json=json.dumps(error),
                    )
                )
            else:
                moves.append(plan_move(orphaned, State.READY, "requeued", actor=SYSTEM))
        return self._apply_all(moves) // 2 if moves else 0

    def next_timer_at(self) -> float | None:
        return self.store.next_timer_at()

    def try_lead(self, role: str, holder: str, ttl: float) -> bool:
        return self.store.try_lead(role, holder, self.clock.now(), ttl)

    def _apply_all(self, moves: Sequence[Move]) -> int:
        if not moves:
            return 0
        applied = sum(self.store.commit_batch(moves, [], None, self.clock.now()).applied)
        if applied:
            self._notify()
        return applied


def _after(job: Job, move: Move) -> Job:
    """The job as ``move`` leaves it, so that a second move can follow in the same batch."""
    return replace(
        job,
        state=move.to_state,
        version=job.version + 1,
        lease_token=move.lease_token,
        lease_expires_at=None,
    )


def outcome_move(
    job: Job,
    *,
    result: Any = None,
    error: BaseException | None = None,
    cancelled: bool = False,
    released: bool = False,
    retry: Retry,
    now: float,
    max_payload_bytes: int,
) -> Move:
    """How a run ends, as a move guarded by the run's lease token."""
    if cancelled:
        return plan_move(job, State.CANCELLED, "cancelled", by_lease=True)
    if released:
        # The worker shut down before the handler finished: the attempt does not count.
        return plan_move(
            job, State.READY, "released", by_lease=True, attempt=max(0, job.attempt - 1)
        )
    if error is None:
        try:
            result_json = encode(
                result, what="the handler's return value", max_bytes=max_payload_bytes
            )
        except Exception as exc:  # a result we cannot store fails the job, never vanishes
            error = exc
        else:
            return plan_move(
                job, State.COMPLETED, "completed", by_lease=True, result_json=result_json
            )
    record = error_record(error)
    error_json = json.dumps(record)
    if not retry.is_retriable(error):
        return plan_move(
            job, State.FAILED, "failed", by_lease=True, detail=record, error_json=error_json
        )
    if job.attempt < job.max_attempts:
        next_retry_at = now + retry.delay(job.attempt)
        return plan_move(
            job,
            State.BACKING_OFF,
            "retry-scheduled",
            by_lease=True,
            detail={**record, "next_retry_at": next_retry_at},
            error_json=error_json,
            next_retry_at=next_retry_at,
        )
    exhausted = State.PAUSED if retry.on_exhausted == "pause" else State.FAILED
    return plan_move(
        job, exhausted, "retries-exhausted", by_lease=True, detail=record, error_json=error_json
    )
