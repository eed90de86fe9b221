"""The only writer of job state: table check, then compare-and-set, then event.

Every state change in Instar is built by ``plan_move`` (which consults the
lifecycle table and raises ``InvalidTransition`` for anything else) and
written by the store's ``commit_batch`` in one transaction with its event.
Operator verbs re-read the job and retry when they lose a race to another
writer; a worker's reports are guarded by its lease token instead.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from instar.clock import Clock, SystemClock
from instar.control import Suspend
from instar.errors import (
    AwakeableNotFound,
    InvalidTransition,
    JobNotFound,
    SignalAlreadySettled,
)
from instar.lifecycle import ENTRY_STATES, State, can_transition, is_leased, is_terminal
from instar.models import Awakeable, Event, Job
from instar.payload import encode
from instar.retry import Retry
from instar.store.contract import (
    BatchResult,
    ClaimRequest,
    Held,
    JobFilter,
    Move,
    NewJob,
    Note,
    Store,
)

log = logging.getLogger("instar.engine")

_RACE_RETRIES = 20
_DEPENDENCY_FAILED = frozenset({State.FAILED, State.CANCELLED})
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
        "wake_at": _epoch(job.wake_at),
        "pause_deadline": _epoch(job.pause_deadline),
    }
    if is_leased(job.state) and not is_leased(to_state):
        values.update(lease_token=None, lease_expires_at=None)
    # Timer columns belong to the state that set them.
    if to_state is not State.SUSPENDED:
        values["wake_at"] = None
    if to_state is not State.PAUSED:
        values["pause_deadline"] = None
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
        if store.supports_listen:
            store.watch(self._notify)

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

    def enqueue(
        self, jobs: Sequence[NewJob], actor: str | None = None, connection: Any = None
    ) -> list[Job]:
        for job in jobs:
            if job.state not in ENTRY_STATES:
                raise InvalidTransition(0, "(new)", job.state.value, "not a state a job starts in")
        for parent in {p for job in jobs for p in job.after}:
            self.get(parent)  # an unknown dependency is refused before anything is written
        created = self.store.insert_jobs(jobs, self.clock.now(), actor, connection)
        if connection is not None:
            # Not visible until the caller commits; the maintenance sweep settles
            # any dependencies, and the commit's NOTIFY wakes the workers.
            return created
        self._notify()
        waiting = [job for job in created if job.state is State.PENDING]
        if waiting:
            self._settle(waiting)
            return [self.get(job.id) if job.state is State.PENDING else job for job in created]
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

    def pause(self, job_id: int, actor: str | None = None) -> Job:
        """Park a job for a person: at once if it is waiting, at its next
        checkpoint if it is running."""
        for _ in range(_RACE_RETRIES):
            job = self.get(job_id)
            if job.state is State.RUNNING:
                if job.pause_requested or self.store.request_pause_if_leased(
                    job_id, self.clock.now(), actor
                ):
                    return self.get(job_id)
                continue
            deadline = self.clock.now() + job.pause_timeout
            move = plan_move(job, State.PAUSED, "paused", actor=actor, pause_deadline=deadline)
            if self._apply_one(move):
                return self.get(job_id)
        raise InvalidTransition(job_id, job.state.value, State.PAUSED.value, "too much contention")

    def resume(self, job_id: int, actor: str | None = None) -> Job:
        """A paused job goes back to ready, or to scheduled if its start is still ahead."""
        for _ in range(_RACE_RETRIES):
            job = self.get(job_id)
            ahead = job.run_at is not None and job.run_at.timestamp() > self.clock.now()
            target = State.SCHEDULED if ahead and job.attempt == 0 else State.READY
            if job.state is not State.PAUSED:
                raise InvalidTransition(job_id, job.state.value, target.value, "it is not paused")
            if self._apply_one(plan_move(job, target, "resumed", actor=actor)):
                self._notify()
                return self.get(job_id)
        raise InvalidTransition(job_id, job.state.value, State.READY.value, "too much contention")

    def stop(self, job_id: int, actor: str | None = None) -> Job:
        """Ask a serving service job to shut down: serving -> stopping; its worker
        sees it at the next heartbeat and the handler is told through ctx.stopping."""
        for _ in range(_RACE_RETRIES):
            job = self.get(job_id)
            move = plan_move(job, State.STOPPING, "stop-requested", actor=actor)
            if self._apply_one(move):
                return self.get(job_id)
        raise InvalidTransition(
            job_id, job.state.value, State.STOPPING.value, "too much contention"
        )

    def resolve(self, awakeable_id: str, value_json: str, actor: str | None = None) -> Awakeable:
        return self._settle_signal(awakeable_id, "resolved", value_json, None, actor)

    def reject(self, awakeable_id: str, reason: str, actor: str | None = None) -> Awakeable:
        return self._settle_signal(awakeable_id, "rejected", None, reason, actor)

    def _settle_signal(
        self,
        awakeable_id: str,
        state: str,
        value_json: str | None,
        reason: str | None,
        actor: str | None,
    ) -> Awakeable:
        awakeable = self.store.get_awakeable(awakeable_id)
        if awakeable is None:
            raise AwakeableNotFound(awakeable_id)
        if awakeable.state != "pending":
            raise SignalAlreadySettled(awakeable_id, awakeable.state)
        job = self.get(awakeable.job_id)
        wake = None
        if job.state is State.SUSPENDED:
            wake = plan_move(
                job, State.READY, "signal", actor=actor, detail={"signal": awakeable.name}
            )
        if not self.store.settle_awakeable(
            awakeable_id, state, value_json, reason, wake, self.clock.now()
        ):
            settled = self.store.get_awakeable(awakeable_id)
            raise SignalAlreadySettled(awakeable_id, settled.state if settled else "gone")
        self._notify()
        settled = self.store.get_awakeable(awakeable_id)
        assert settled is not None
        return settled

    def pause_queue(self, queue: str) -> bool:
        return self.store.pause_queue(queue, self.clock.now())

    def resume_queue(self, queue: str) -> bool:
        resumed = self.store.resume_queue(queue)
        self._notify()
        return resumed

    def _apply_one(self, move: Move) -> bool:
        return self._apply_all([move]) == 1

    # -- the worker's side ----------------------------------------------------

    def exchange(
        self, finished: Sequence[Move], notes: Sequence[Note], claim: ClaimRequest | None
    ) -> BatchResult:
        """Report finished jobs and claim new ones in a single transaction."""
        batch = self.store.commit_batch(finished, notes, claim, self.clock.now())
        if finished:
            self._after_moves([m for m, ok in zip(finished, batch.applied, strict=True) if ok])
        return batch

    def heartbeat(self, worker: str, job_ids: Sequence[int]) -> list[Held]:
        return self.store.heartbeat(worker, job_ids, self.clock.now())

    # -- maintenance --------------------------------------------------------

    def fire_due_timers(self, limit: int = 1000) -> int:
        """Every state that waits for a time, when the time comes: scheduled and
        backing-off jobs become ready, suspended ones wake (a signal that did not
        come in time is timed out first), paused ones past their timeout are cancelled."""
        now = self.clock.now()
        moves: list[Move] = []
        for job in self.store.due_timers(now, limit):
            match job.state:
                case State.SCHEDULED | State.BACKING_OFF:
                    moves.append(plan_move(job, State.READY, "due", actor=SYSTEM))
                case State.SUSPENDED:
                    wake = plan_move(job, State.READY, "woke", actor=SYSTEM)
                    late = [
                        a
                        for a in self.store.awakeables_of(job.id)
                        if a.state == "pending" and a.timeout_at and a.timeout_at.timestamp() <= now
                    ]
                    if not late:
                        moves.append(wake)
                    for awakeable in late:
                        self.store.settle_awakeable(
                            awakeable.id, "timed-out", None, None, wake, now
                        )
                case State.PAUSED:
                    moves.append(plan_move(job, State.CANCELLED, "pause-timeout", actor=SYSTEM))
                case _:
                    raise AssertionError(f"due_timers returned a {job.state} job")
        return self._apply_all(moves)

    def settle_stranded(self, limit: int = 1000) -> int:
        """Release waiters whose awaited jobs have all ended (a sweep that covers a
        process that died between a job's end and the settling of its waiters)."""
        return self._settle(self.store.stranded_waiters(limit))

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
        results = self.store.commit_batch(moves, [], None, self.clock.now()).applied
        won = [m for m, ok in zip(moves, results, strict=True) if ok]
        if won:
            self._notify()
            self._after_moves(won)
        return len(won)

    # -- waiting on other jobs and on signals ------------------------------------

    def _after_moves(self, moves: Sequence[Move]) -> None:
        """What applied moves set off: an ended job releases the jobs waiting for
        it; a job that just suspended on something that already happened wakes.

        The moves are committed already, so a failure here must not look like
        theirs (a worker would drop the batch's claims): it is logged, and the
        maintenance sweep (``settle_stranded``) finishes the work."""
        try:
            self._set_off(moves)
        except Exception as exc:
            log.warning(
                "releasing jobs that wait on finished ones failed (%s); maintenance will", exc
            )

    def _set_off(self, moves: Sequence[Move]) -> None:
        ended = [m.job_id for m in moves if is_terminal(m.to_state)]
        if ended:
            self._settle(self.store.waiting_on(ended))
        for move in moves:
            if move.to_state is State.SUSPENDED and move.detail_json is not None:
                self._wake_if_already_settled(move.job_id, json.loads(move.detail_json))

    def _settle(self, waiters: Sequence[Job]) -> int:
        """Pending jobs whose dependencies all completed start; those with a failed
        or cancelled dependency fail (and so release their own dependants);
        parents suspended on a join wake once every child has ended."""
        moves: list[Move] = []
        now = self.clock.now()
        for waiter in waiters:
            if waiter.state is State.PENDING:
                parents = self.store.dependencies_of(waiter.id, "after")
                bad = next((p for p in parents if p.state in _DEPENDENCY_FAILED), None)
                if bad is not None:
                    error = {
                        "type": "DependencyFailed",
                        "message": f"dependency failed: job {bad.id} ({bad.name}) is {bad.state}",
                        "traceback": "",
                    }
                    moves.append(
                        plan_move(
                            waiter,
                            State.FAILED,
                            "dependency-failed",
                            actor=SYSTEM,
                            detail={"dependency": bad.id, "state": bad.state.value},
                            error_json=json.dumps(error),
                        )
                    )
                elif all(p.state is State.COMPLETED for p in parents):
                    ahead = waiter.run_at is not None and waiter.run_at.timestamp() > now
                    start = State.SCHEDULED if ahead else State.READY
                    moves.append(plan_move(waiter, start, "dependencies-met", actor=SYSTEM))
            elif waiter.state is State.SUSPENDED:
                children = self.store.dependencies_of(waiter.id, "join")
                if children and all(is_terminal(c.state) for c in children):
                    self.store.remove_dependencies(waiter.id, "join")
                    moves.append(plan_move(waiter, State.READY, "children-ended", actor=SYSTEM))
        return self._apply_all(moves)

    def _wake_if_already_settled(self, job_id: int, detail: dict[str, Any]) -> None:
        """A signal resolved, or children that ended, while the job was on its way
        to suspended: nothing else would wake it, so wake it now."""
        if "awaiting" in detail:
            awakeable = self.store.get_awakeable(detail["awaiting"])
            if awakeable is not None and awakeable.state != "pending":
                self._wake(job_id, "signal")
        elif "join" in detail:
            self._settle([self.get(job_id)])

    def _wake(self, job_id: int, trigger: str, actor: str | None = SYSTEM) -> None:
        job = self.get(job_id)
        if job.state is State.SUSPENDED:
            self._apply_all([plan_move(job, State.READY, trigger, actor=actor)])


def _after(job: Job, move: Move) -> Job:
    """The job as ``move`` leaves it, so that a second move can follow in the same batch."""
    return replace(
        job,
        state=move.to_state,
        version=job.version + 1,
        lease_token=move.lease_token,
        lease_expires_at=None,
    )


def outcome_moves(
    job: Job,
    *,
    result: Any = None,
    error: BaseException | None = None,
    cancelled: bool = False,
    released: bool = False,
    suspended: Suspend | None = None,
    paused: bool = False,
    retry: Retry,
    now: float,
    max_payload_bytes: int,
) -> list[Move]:
    """How a run ends, as moves guarded by the run's lease token."""
    if cancelled:
        return [plan_move(job, State.CANCELLED, "cancelled", by_lease=True)]
    if released:
        # The worker shut down before the handler finished: the attempt does not count.
        return [_uncounted(job, State.READY, "released")]
    if suspended is not None:
        return [
            _uncounted(
                job,
                State.SUSPENDED,
                "suspended",
                detail=suspended.detail,
                wake_at=suspended.wake_at,
            )
        ]
    if paused:
        deadline = now + job.pause_timeout
        return [_uncounted(job, State.PAUSED, "paused", pause_deadline=deadline)]
    if error is None:
        try:
            result_json = encode(
                result, what="the handler's return value", max_bytes=max_payload_bytes
            )
        except Exception as exc:  # a result we cannot store fails the job, never vanishes
            error = exc
        else:
            moves = []
            if job.state is State.SERVING:
                # A service returned on its own: it passes through stopping on its way out.
                moves.append(plan_move(job, State.STOPPING, "returned", by_lease=True))
                job = _after(job, moves[0])
            moves.append(
                plan_move(job, State.COMPLETED, "completed", by_lease=True, result_json=result_json)
            )
            return moves
    record = error_record(error)
    error_json = json.dumps(record)
    retriable = retry.is_retriable(error) and can_transition(job.state, State.BACKING_OFF)
    if not retriable:
        return [
            plan_move(
                job, State.FAILED, "failed", by_lease=True, detail=record, error_json=error_json
            )
        ]
    if job.attempt < job.max_attempts:
        next_retry_at = now + retry.delay(job.attempt)
        return [
            plan_move(
                job,
                State.BACKING_OFF,
                "retry-scheduled",
                by_lease=True,
                detail={**record, "next_retry_at": next_retry_at},
                error_json=error_json,
                next_retry_at=next_retry_at,
            )
        ]
    if retry.on_exhausted == "pause":
        return [
            plan_move(
                job,
                State.PAUSED,
                "retries-exhausted",
                by_lease=True,
                detail=record,
                error_json=error_json,
                pause_deadline=now + job.pause_timeout,
            )
        ]
    return [
        plan_move(
            job,
            State.FAILED,
            "retries-exhausted",
            by_lease=True,
            detail=record,
            error_json=error_json,
        )
    ]


def _uncounted(job: Job, to_state: State, trigger: str, **changes: Any) -> Move:
    """A run that ended without trying the work to its end does not use up an attempt."""
    return plan_move(
        job, to_state, trigger, by_lease=True, attempt=max(0, job.attempt - 1), **changes
    )
