"""Put a job in any state of the lifecycle, through the engine as a worker,
an operator or maintenance would: no SQL, every move in the timeline."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import instar
from instar.engine import Outcome, Raised, Returned, Suspended, outcome_moves, plan_move
from instar.lifecycle import State
from instar.registry import JobDefinition
from instar.store.contract import ClaimRequest, Move
from instar.vocabulary import Trigger

FACTORY_JOB = "tests.factory.work"
FAR = 10 * 365 * 86400.0  # seconds: a delay no test reaches
FAR_AHEAD = 4_000_000_000.0  # epoch seconds (2096): a wake-up time no test reaches


def _definition(app: instar.App) -> JobDefinition:
    if FACTORY_JOB not in app.registry:

        @app.job(name=FACTORY_JOB, retry=instar.Retry(max_attempts=3))
        def work() -> None:
            return None

    return app.registry[FACTORY_JOB]


def _queue() -> str:
    """A queue of the factory's own, so that its claims take only its job."""
    return f"factory-{uuid.uuid4().hex[:8]}"


def _running(app: instar.App) -> instar.Job:
    queue = _queue()
    job = app.enqueue(_definition(app), queue=queue)
    [claimed] = app.engine.exchange([], [], ClaimRequest("factory", 1, [queue])).claimed
    assert claimed.id == job.id
    return claimed


def _end(app: instar.App, job: instar.Job, moves: list[Move]) -> instar.Job:
    assert app.engine.exchange(moves, [], None).applied == [True] * len(moves)
    return app.get(job.id)


def _ended_as(outcome: Outcome) -> Callable[[instar.App], instar.Job]:
    def make(app: instar.App) -> instar.Job:
        job = _running(app)
        retry = _definition(app).options.retry
        now = app.clock.now()
        moves = outcome_moves(job, outcome, retry=retry, now=now, max_payload_bytes=1 << 20)
        return _end(app, job, moves)

    return make


def _by_lease(to_state: State, trigger: Trigger) -> Callable[[instar.Job], Move]:
    return lambda job: plan_move(job, to_state, trigger, by_lease=True)


def _pending(app: instar.App) -> instar.Job:
    first = app.enqueue(_definition(app), delay=FAR, queue=_queue())
    return app.enqueue(_definition(app), after=[first.id], queue=_queue())


def _orphaned(app: instar.App) -> instar.Job:
    job = _running(app)
    lost = plan_move(job, State.ORPHANED, Trigger.LEASE_EXPIRED, actor=instar.Actor.SYSTEM)
    assert app.engine.apply([lost]) == [True]
    return app.get(job.id)


def _serving(app: instar.App) -> instar.Job:
    job = _running(app)
    return _end(app, job, [_by_lease(State.SERVING, Trigger.SERVING)(job)])


def _stopping(app: instar.App) -> instar.Job:
    return app.stop(_serving(app).id)


def _paused(app: instar.App) -> instar.Job:
    return app.pause(app.enqueue(_definition(app), queue=_queue()).id)


def _cancelled(app: instar.App) -> instar.Job:
    return app.cancel(app.enqueue(_definition(app), queue=_queue()).id)


_MAKERS: dict[State, Callable[[instar.App], instar.Job]] = {
    State.PENDING: _pending,
    State.SCHEDULED: lambda app: app.enqueue(_definition(app), delay=FAR, queue=_queue()),
    State.READY: lambda app: app.enqueue(_definition(app), queue=_queue()),
    State.RUNNING: _running,
    State.SUSPENDED: _ended_as(Suspended(FAR_AHEAD, {"sleep": "factory", "until": FAR_AHEAD})),
    State.BACKING_OFF: _ended_as(Raised(RuntimeError("flaky"))),
    State.PAUSED: _paused,
    State.ORPHANED: _orphaned,
    State.SERVING: _serving,
    State.STOPPING: _stopping,
    State.COMPLETED: _ended_as(Returned("done")),
    State.FAILED: _ended_as(Raised(instar.Fatal("broken"))),
    State.CANCELLED: _cancelled,
}


def job_in(app: instar.App, state: State) -> instar.Job:
    """A new job of the factory's own handler, moved into ``state`` through the engine."""
    job = _MAKERS[state](app)
    assert job.state is state, f"the factory made a {job.state} job, not {state}"
    return job
