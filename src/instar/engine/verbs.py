"""Operator verbs: cancel, retry, pause, resume, stop, resolve, reject.

A verb reads the job, decides from its state what the lifecycle table allows
(a move, or a request flag for the worker holding a leased job), and writes
it through the engine's door. Losing a race to another writer is normal: the
verb reads again and decides again (``_until_applied``), a bounded number of
times. A verb the table refuses raises ``InvalidTransition`` and changes
nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection

from instar.engine.door import Engine
from instar.engine.moves import plan_move
from instar.errors import InvalidTransition, VersionMismatch
from instar.lifecycle import State, can_transition, is_leased, is_terminal, sources_of
from instar.models import Awakeable, Job
from instar.payload import cut, safe_text
from instar.store.contract import Move, Request, Settlement
from instar.vocabulary import AwakeableState, Trigger

RACE_RETRIES = 20
"""Reads and tries a verb makes before it gives up on a job that keeps changing."""

VERBS: dict[str, tuple[State, frozenset[State]]] = {
    "cancel": (State.CANCELLED, sources_of(State.CANCELLED)),
    "pause": (State.PAUSED, sources_of(State.PAUSED)),
    "resume": (State.READY, frozenset({State.PAUSED})),
    "retry": (State.READY, frozenset({State.FAILED})),
    "stop": (State.STOPPING, sources_of(State.STOPPING)),
}
"""Each operator verb: the state it moves a job to (or asks its worker to), and
the states it applies to. Cancel, pause and stop apply wherever the lifecycle
table allows their move; resume and retry are narrower than the table's moves
into ``ready``: only a paused job resumes, only a failed one is retried."""

Decision = Move | Request | None
"""What a verb wants: a move, a flag for the job's worker, or nothing (done already)."""


class Operator:
    """The verbs people (and programs acting for them) use on jobs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def cancel(
        self,
        job_id: int,
        actor: str | None,
        expected_version: int | None = None,
        reason: str | None = None,
    ) -> Job:
        """Cancel at once, or, for a job a worker holds, ask that worker to stop."""

        def decide(job: Job) -> Decision:
            _allowed("cancel", job, State.CANCELLED)
            if is_leased(job.state):
                return None if job.cancel_requested else Request.CANCEL
            return plan_move(
                job, State.CANCELLED, Trigger.CANCELLED, actor=actor, detail=_why(reason)
            )

        return self._until_applied(job_id, State.CANCELLED, actor, decide, expected_version, reason)

    def retry(
        self,
        job_id: int,
        actor: str | None,
        expected_version: int | None = None,
        reason: str | None = None,
    ) -> Job:
        """An operator's retry: a failed job runs again with a fresh attempt count."""

        def decide(job: Job) -> Decision:
            if job.state not in VERBS["retry"][1]:
                raise _refused("retry", job, State.READY, VERBS["retry"][1])
            return plan_move(
                job,
                State.READY,
                Trigger.RETRIED,
                actor=actor,
                detail={"previous_attempts": job.attempt, **(_why(reason) or {})},
                attempt=0,
                rerun=False,
                next_retry_at=None,
            )

        return self._until_applied(job_id, State.READY, actor, decide, expected_version, reason)

    def pause(
        self,
        job_id: int,
        actor: str | None,
        expected_version: int | None = None,
        reason: str | None = None,
    ) -> Job:
        """Park a job for a person: at once if it is waiting, at its next
        checkpoint if it is running."""
        now = self.engine.clock.now

        def decide(job: Job) -> Decision:
            _allowed("pause", job, State.PAUSED)
            if job.state is State.RUNNING:
                return None if job.pause_requested else Request.PAUSE
            deadline = now() + job.pause_timeout
            return plan_move(
                job,
                State.PAUSED,
                Trigger.PAUSED,
                actor=actor,
                pause_deadline=deadline,
                detail=_why(reason),
            )

        return self._until_applied(job_id, State.PAUSED, actor, decide, expected_version, reason)

    def resume(
        self,
        job_id: int,
        actor: str | None,
        expected_version: int | None = None,
        reason: str | None = None,
    ) -> Job:
        """A paused job goes back to ready, or to scheduled if its start is still ahead."""
        now = self.engine.clock.now

        def decide(job: Job) -> Decision:
            if job.state not in VERBS["resume"][1]:
                raise _refused("resume", job, State.READY, VERBS["resume"][1])
            ahead = job.run_at is not None and job.run_at.timestamp() > now()
            target = State.SCHEDULED if ahead and job.attempt == 0 else State.READY
            return plan_move(job, target, Trigger.RESUMED, actor=actor, detail=_why(reason))

        return self._until_applied(job_id, State.READY, actor, decide, expected_version, reason)

    def stop(
        self,
        job_id: int,
        actor: str | None,
        expected_version: int | None = None,
        reason: str | None = None,
    ) -> Job:
        """Ask a serving service job to shut down: serving -> stopping; its worker
        sees it at the next heartbeat and the handler is told through ctx.stopping."""

        def decide(job: Job) -> Decision:
            _allowed("stop", job, State.STOPPING)
            return plan_move(
                job, State.STOPPING, Trigger.STOP_REQUESTED, actor=actor, detail=_why(reason)
            )

        return self._until_applied(job_id, State.STOPPING, actor, decide, expected_version, reason)

    def resolve(self, awakeable_id: str, value_json: str, actor: str | None) -> Awakeable:
        """Answer an awakeable with a value (JSON text); its job wakes if suspended."""
        settlement = Settlement(awakeable_id, AwakeableState.RESOLVED, value_json=value_json)
        return self.engine.settle_signal(settlement, actor)

    def reject(self, awakeable_id: str, reason: str, actor: str | None) -> Awakeable:
        """Refuse an awakeable; its handler's ``await_signal`` raises SignalRejected."""
        settlement = Settlement(awakeable_id, AwakeableState.REJECTED, reason=safe_text(reason))
        return self.engine.settle_signal(settlement, actor)

    def _until_applied(
        self,
        job_id: int,
        target: State,
        actor: str | None,
        decide: Callable[[Job], Decision],
        expected_version: int | None = None,
        reason: str | None = None,
    ) -> Job:
        """Read, decide, write; again if another writer got there first. With
        ``expected_version``, only on the job as it stood at that version:
        ``VersionMismatch`` once it has changed (if-match, RFC 9110 13.1.1)."""
        for _ in range(RACE_RETRIES):
            job = self.engine.read.get(job_id)
            if expected_version is not None and job.version != expected_version:
                raise VersionMismatch(job_id, expected_version, job.version)
            decision = decide(job)
            if decision is None:
                return job
            if isinstance(decision, Request):
                why = _why(reason)
                done = self.engine.request(
                    job_id, decision, actor, None if why is None else json.dumps(why)
                )
            else:
                done = self.engine.apply([decision]) == [True]
            if done:
                return self.engine.read.get(job_id)
        raise InvalidTransition(job_id, job.state.value, target.value, "too much contention")


MAX_REASON = 1000
"""Characters of a verb's reason kept in the timeline (longer ones are cut)."""


def _why(reason: str | None) -> dict[str, str] | None:
    """A verb's reason as its event's detail (None: no reason given)."""
    if reason is None or not reason.strip():
        return None
    return {"reason": cut(safe_text(reason), MAX_REASON)}


def _allowed(verb: str, job: Job, target: State) -> None:
    """Refuse ``verb`` in words when the table allows no move from the job's state
    to ``target`` (the states it applies to come from the table too)."""
    if not can_transition(job.state, target):
        raise _refused(verb, job, target, sources_of(target))


def _refused(
    verb: str, job: Job, target: State, applies_to: Collection[State]
) -> InvalidTransition:
    """``job 12 is already cancelled``; ``job 12 has already completed; only a job
    that has not ended can be cancelled``; ``stop applies only to a job that is
    serving (job 12 is ready)``."""
    state = job.state.value
    if job.state is target and verb in ("cancel", "pause", "stop"):
        message = f"job {job.id} is already {state}"
    elif verb == "retry":
        message = f"job {job.id} is {state}; only a failed job can be retried"
    elif verb == "resume":
        message = f"job {job.id} is {state}, not paused; only a paused job can be resumed"
    elif is_terminal(job.state) and verb == "cancel":
        message = (
            f"job {job.id} has already {state}; only a job that has not ended can be cancelled"
        )
    else:
        names = [s.value for s in State if s in applies_to]
        which = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        noun = "a service job" if verb == "stop" else "a job"
        message = f"{verb} applies only to {noun} that is {which} (job {job.id} is {state})"
    allowed = tuple(s.value for s in State if s in applies_to)
    return InvalidTransition(job.id, state, target.value, message=message, allowed_from=allowed)
