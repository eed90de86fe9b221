"""Durable execution: every path through the lifecycle, checked on the timeline."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import instar
from instar.clock import FrozenClock
from instar.lifecycle import State
from instar.maintenance.runner import Maintenance
from tests.conftest import running_worker

S = State


def path(app: instar.App, job_id: int) -> list[State]:
    """The states a job went through, in order (notes left out)."""
    events = [e for e in app.history(job_id) if e.from_state != e.to_state]
    return [events[0].to_state] + [e.to_state for e in events[1:]]


def fire_timers(app: instar.App) -> None:
    Maintenance(app.engine, "test").run_once()


def test_a_pending_job_waits_for_its_dependency_then_is_scheduled_then_runs(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app

    @app.job
    def step_one() -> str:
        return "one"

    @app.job
    def step_two() -> str:
        return "two"

    first = step_one.enqueue()
    second = app.enqueue(step_two, delay=30, after=[first.id])
    assert second.state is S.PENDING
    app.run_worker(burst=True)
    assert app.get(first.id).state is S.COMPLETED
    assert app.get(second.id).state is S.SCHEDULED
    clock.advance(31)
    app.run_worker(burst=True)
    assert path(app, second.id) == [S.PENDING, S.SCHEDULED, S.READY, S.RUNNING, S.COMPLETED]
    assert app.get(second.id).result == "two"


def test_a_dependency_chain_runs_in_order_and_a_failure_cascades(app: instar.App) -> None:
    order: list[str] = []

    @app.job(retry=instar.Retry(max_attempts=1))
    def link(name: str, fail: bool = False) -> str:
        order.append(name)
        if fail:
            raise instar.Fatal(f"{name} broke")
        return name

    a = link.enqueue(name="a")
    b = app.enqueue(link, {"name": "b"}, after=[a])
    c = app.enqueue(link, {"name": "c"}, after=[b])
    app.run_worker(burst=True)
    assert order == ["a", "b", "c"]
    assert app.dependencies(c.id)[0].id == b.id

    x = link.enqueue(name="x", fail=True)
    y = app.enqueue(link, {"name": "y"}, after=[x])
    z = app.enqueue(link, {"name": "z"}, after=[y])
    app.run_worker(burst=True)
    assert [app.get(j.id).state for j in (x, y, z)] == [S.FAILED, S.FAILED, S.FAILED]
    assert "y" not in order and "z" not in order
    cause = app.history(z.id)[-1]
    assert (cause.trigger, cause.actor, cause.detail) == (
        "dependency-failed",
        "system",
        {"dependency": y.id, "state": "failed"},
    )
    assert path(app, z.id) == [S.PENDING, S.FAILED]


def test_a_cancelled_dependency_fails_its_dependants(app: instar.App) -> None:
    @app.job
    def work() -> None:
        return None

    parent = work.enqueue(delay=60)
    child = app.enqueue(work, after=[parent.id])
    app.cancel(parent.id)
    assert app.get(child.id).state is S.FAILED


def test_a_dependency_on_an_unknown_job_is_refused_and_nothing_is_written(
    app: instar.App,
) -> None:
    @app.job
    def work() -> None:
        return None

    with pytest.raises(instar.JobNotFound):
        work.enqueue(after=[999])
    assert app.jobs() == []


def test_steps_run_once_across_a_pause_at_a_checkpoint_and_a_resume(app: instar.App) -> None:
    effects: list[str] = []
    at_checkpoint = threading.Event()
    go_on = threading.Event()

    def effect(name: str, value: int) -> int:
        effects.append(name)
        return value

    @app.job
    def pipeline(ctx: instar.Context) -> dict[str, Any]:
        fetched = ctx.step("fetch", effect, "fetch", 41)
        if ctx.checkpoint_data is None:
            at_checkpoint.set()
            go_on.wait(10)
            ctx.checkpoint({"fetched": fetched})
        total = ctx.step("add", effect, "add", fetched + 1)
        return {"total": total, "seen": ctx.checkpoint_data}

    job = pipeline.enqueue()
    with running_worker(app):
        assert at_checkpoint.wait(10)
        asked = app.pause(job.id)
        assert asked.state is S.RUNNING and asked.pause_requested
        go_on.set()
        paused = app.wait(job.id, timeout=10)
        assert paused.state is S.PAUSED
        # A pause does not use up an attempt: the job shows the attempt it ran,
        # and its next run continues that attempt.
        assert (paused.attempt, paused.rerun, paused.worker) == (1, True, None)
        app.resume(job.id)
        done = app.wait(job.id, timeout=10)
    assert (done.state, done.attempt) == (S.COMPLETED, 1)
    assert done.result == {"total": 42, "seen": {"fetched": 41}}
    assert effects == ["fetch", "add"], "no step ran twice"
    assert path(app, job.id) == [S.READY, S.RUNNING, S.PAUSED, S.READY, S.RUNNING, S.COMPLETED]


def test_a_waiting_job_is_paused_at_once_and_a_paused_job_is_cancelled_after_its_timeout(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app

    @app.job(pause_timeout=3600)
    def work() -> None:
        return None

    job = work.enqueue(delay=60)
    assert app.pause(job.id).state is S.PAUSED
    clock.advance(3599)
    fire_timers(app)
    assert app.get(job.id).state is S.PAUSED
    clock.advance(2)
    fire_timers(app)
    assert path(app, job.id) == [S.SCHEDULED, S.PAUSED, S.CANCELLED]
    assert app.history(job.id)[-1].trigger == "pause-timeout"


def test_resuming_a_job_whose_start_is_still_ahead_schedules_it(
    frozen_app: instar.App,
) -> None:
    @frozen_app.job
    def work() -> None:
        return None

    job = work.enqueue(delay=60)
    frozen_app.pause(job.id)
    assert frozen_app.resume(job.id).state is S.SCHEDULED
    with pytest.raises(
        instar.InvalidTransition, match="not paused; only a paused job can be resumed"
    ):
        frozen_app.resume(job.id)


def test_backing_off_then_paused_then_resumed_then_completed(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app

    @app.job(retry=instar.Retry(initial_interval=10, jitter=0))
    def flaky(ctx: instar.Context) -> str:
        if ctx.attempt == 1:
            raise RuntimeError("first try fails")
        return "ok"

    job = flaky.enqueue()
    app.run_worker(burst=True)
    assert app.get(job.id).state is S.BACKING_OFF
    app.pause(job.id)
    app.resume(job.id)
    app.run_worker(burst=True)
    assert path(app, job.id) == [
        S.READY,
        S.RUNNING,
        S.BACKING_OFF,
        S.PAUSED,
        S.READY,
        S.RUNNING,
        S.COMPLETED,
    ]


def test_a_durable_sleep_suspends_the_job_and_wakes_it_when_due(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app
    effects: list[str] = []

    @app.job
    def reminder(ctx: instar.Context) -> str:
        ctx.step("before", lambda: effects.append("before"))
        ctx.sleep(3600)
        ctx.step("after", lambda: effects.append("after"))
        return "sent"

    job = reminder.enqueue()
    app.run_worker(burst=True)
    suspended = app.get(job.id)
    assert suspended.state is S.SUSPENDED
    assert (suspended.worker, suspended.attempt, suspended.rerun) == (None, 1, True)
    assert suspended.wake_at is not None
    assert suspended.wake_at.timestamp() == pytest.approx(clock.now() + 3600)
    clock.advance(3599)
    app.run_worker(burst=True)
    assert app.get(job.id).state is S.SUSPENDED
    clock.advance(2)
    app.run_worker(burst=True)
    done = app.get(job.id)
    assert (done.state, done.result, done.attempt) == (S.COMPLETED, "sent", 1)
    assert effects == ["before", "after"]
    assert path(app, job.id) == [S.READY, S.RUNNING, S.SUSPENDED, S.READY, S.RUNNING, S.COMPLETED]


def test_a_signal_resolved_from_outside_wakes_the_job_with_its_value(app: instar.App) -> None:
    @app.job
    def approval(ctx: instar.Context) -> str:
        answer = ctx.await_signal("approve", timeout=3600)
        return f"approved by {answer['by']}"

    job = approval.enqueue()
    app.run_worker(burst=True)
    assert app.get(job.id).state is S.SUSPENDED
    [awakeable] = app.awakeables(job.id)
    assert (awakeable.name, awakeable.state) == ("approve", "pending")
    app.resolve(awakeable.id, {"by": "ada"})
    app.run_worker(burst=True)
    done = app.get(job.id)
    assert (done.state, done.result) == (S.COMPLETED, "approved by ada")
    assert path(app, job.id) == [S.READY, S.RUNNING, S.SUSPENDED, S.READY, S.RUNNING, S.COMPLETED]
    with pytest.raises(instar.SignalAlreadySettled, match="resolved already"):
        app.resolve(awakeable.id, {"by": "bob"})


def test_a_signal_resolved_before_the_job_awaits_it_returns_at_once(app: instar.App) -> None:
    @app.job
    def early(ctx: instar.Context) -> Any:
        # Someone answers between the moment the id is handed out and the await.
        app.resolve(ctx.awakeable("go"), 7)
        return ctx.await_signal("go")

    job = early.enqueue()
    app.run_worker(burst=True)
    done = app.get(job.id)
    assert (done.state, done.result) == (S.COMPLETED, 7)
    assert S.SUSPENDED not in path(app, job.id)


def test_a_rejected_signal_raises_in_the_handler(app: instar.App) -> None:
    @app.job(retry=instar.Retry(max_attempts=1))
    def approval(ctx: instar.Context) -> str:
        try:
            ctx.await_signal("approve")
        except instar.SignalRejected as rejected:
            return f"rejected: {rejected.reason}"
        return "approved"

    job = approval.enqueue()
    app.run_worker(burst=True)
    [awakeable] = app.awakeables(job.id)
    app.reject(awakeable.id, "budget")
    app.run_worker(burst=True)
    assert app.get(job.id).result == "rejected: budget"


def test_a_signal_that_does_not_come_times_out(frozen_app: instar.App, clock: FrozenClock) -> None:
    app = frozen_app

    @app.job
    def approval(ctx: instar.Context) -> str:
        try:
            ctx.await_signal("approve", timeout=60)
        except instar.SignalTimeout:
            return "timed out"
        return "approved"

    job = approval.enqueue()
    app.run_worker(burst=True)
    clock.advance(61)
    app.run_worker(burst=True)
    assert app.get(job.id).result == "timed out"
    [awakeable] = app.awakeables(job.id)
    assert awakeable.state == "timed-out"
    with pytest.raises(instar.SignalAlreadySettled, match="timed-out"):
        app.resolve(awakeable.id, True)


def test_bad_signal_input_is_refused(app: instar.App) -> None:
    with pytest.raises(instar.AwakeableNotFound):
        app.resolve("nope", 1)

    @app.job(retry=instar.Retry(max_attempts=1))
    def twice(ctx: instar.Context) -> None:
        ctx.await_signal("a", timeout=1)

    job = twice.enqueue()
    app.run_worker(burst=True)
    [awakeable] = app.awakeables(job.id)
    with pytest.raises(instar.PayloadError):
        app.resolve(awakeable.id, {1, 2})
    assert app.awakeables(job.id)[0].state == "pending"


def test_awaiting_one_signal_name_twice_in_a_run_is_a_clear_error(app: instar.App) -> None:
    @app.job(retry=instar.Retry(max_attempts=1))
    def same_name_twice(ctx: instar.Context) -> None:
        ctx.step("resolve", lambda: app.resolve(ctx.awakeable("a"), 1) and None)
        ctx.await_signal("a")
        ctx.await_signal("a")

    job = same_name_twice.enqueue()
    app.run_worker(burst=True)
    failed = app.get(job.id)
    assert failed.state is S.FAILED
    assert failed.error is not None and "awaits signal 'a' twice" in failed.error["message"]


def test_a_parent_spawns_children_once_and_joins_their_results(app: instar.App) -> None:
    joined = threading.Event()

    @app.job
    def square(n: int) -> int:
        assert joined.wait(10), "the parent never suspended in its join"
        return n * n

    @app.job
    def parent(ctx: instar.Context) -> int:
        children = [ctx.spawn(square, n=n) for n in (1, 2, 3)]
        return sum(ctx.join(children))

    job = parent.enqueue()
    with running_worker(app):
        # Children finish only once the parent waits for them, whatever the timing.
        deadline = time.monotonic() + 10
        while app.get(job.id).state is not S.SUSPENDED and time.monotonic() < deadline:
            time.sleep(0.01)
        joined.set()
        done = app.wait(job.id, timeout=10)
    assert (done.state, done.result) == (S.COMPLETED, 14)
    children = app.children(job.id)
    assert [c.args["n"] for c in children] == [1, 2, 3], "children created once"
    assert path(app, job.id) == [S.READY, S.RUNNING, S.SUSPENDED, S.READY, S.RUNNING, S.COMPLETED]


def test_a_failed_child_raises_child_failed_in_the_parent(app: instar.App) -> None:
    @app.job(retry=instar.Retry(max_attempts=1))
    def broken() -> None:
        raise instar.Fatal("no")

    @app.job(retry=instar.Retry(max_attempts=1))
    def parent(ctx: instar.Context) -> str:
        try:
            ctx.join([ctx.spawn(broken)])
        except instar.ChildFailed as failed:
            return f"child {failed.child_id} {failed.state}"
        return "fine"

    job = parent.enqueue()
    with running_worker(app):
        done = app.wait(job.id, timeout=10)
    assert done.result == f"child {app.children(job.id)[0].id} failed"


def test_a_service_serves_until_stopped_then_completes(app: instar.App) -> None:
    up = threading.Event()

    @app.service(lease=3.0)
    def model_server(ctx: instar.Context) -> str:
        ctx.ready()
        up.set()
        while not ctx.stopping and not ctx.cancelled:
            time.sleep(0.01)
        return "drained"

    job = model_server.enqueue()
    with running_worker(app):
        assert up.wait(10)
        deadline = time.monotonic() + 10
        while app.get(job.id).state is not S.SERVING and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.stop(job.id).state is S.STOPPING
        done = app.wait(job.id, timeout=10)
    assert (done.state, done.result) == (S.COMPLETED, "drained")
    assert path(app, job.id) == [S.READY, S.RUNNING, S.SERVING, S.STOPPING, S.COMPLETED]


def test_a_heartbeat_read_before_a_services_ready_was_written_does_not_undo_it(
    frozen_app: instar.App,
) -> None:
    """A beat may read the job as it was before the run's own ``ready`` was
    written (on PostgreSQL it reads rows its worker's report holds locked): the
    context keeps what the handler did, and still takes an operator's stop."""
    from instar.store.contract import ClaimRequest

    @frozen_app.service(lease=10.0)
    def server(ctx: instar.Context) -> None:
        return None

    server.enqueue()
    [claimed] = frozen_app.engine.exchange([], [], ClaimRequest("w", 1, None)).claimed
    ctx = instar.Context(claimed, "w", lambda report: None)
    ctx.ready()
    ctx.set_state(S.RUNNING)  # the beat's older news
    assert (ctx.job.state, ctx.job.version) == (S.SERVING, claimed.version + 1)
    ctx.set_state(S.STOPPING)  # an operator's stop, heard by the next beat
    assert ctx.stopping and ctx.job.version == claimed.version + 2


def test_a_serving_job_whose_worker_is_lost_is_orphaned(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    from instar.engine import plan_move
    from instar.store.contract import ClaimRequest
    from instar.vocabulary import Trigger

    app = frozen_app

    @app.service(lease=10.0)
    def server(ctx: instar.Context) -> None:
        return None

    job = server.enqueue()
    [claimed] = app.engine.exchange([], [], ClaimRequest("w", 1, None)).claimed
    app.engine.exchange([plan_move(claimed, S.SERVING, Trigger.SERVING, by_lease=True)], [], None)
    clock.advance(11)
    fire_timers(app)
    assert path(app, job.id)[:4] == [S.READY, S.RUNNING, S.SERVING, S.ORPHANED]


def test_a_paused_queue_is_not_claimed_from_until_resumed(app: instar.App) -> None:
    @app.job(queue="images")
    def resize() -> None:
        return None

    job = resize.enqueue()
    assert app.pause_queue("images")
    app.run_worker(burst=True)
    assert app.get(job.id).state is S.READY
    [stats] = app.queues()
    assert (stats.queue, stats.paused, stats.counts) == ("images", True, {S.READY: 1})
    assert app.resume_queue("images")
    app.run_worker(burst=True)
    assert app.get(job.id).state is S.COMPLETED


def test_two_resumes_racing_one_wins(app: instar.App) -> None:
    @app.job
    def work() -> None:
        return None

    job = work.enqueue(delay=600)
    app.pause(job.id)
    app.resume(job.id)
    with pytest.raises(instar.InvalidTransition):
        app.resume(job.id)
    resumed = [e for e in app.history(job.id) if e.trigger == "resumed"]
    assert len(resumed) == 1


def test_non_json_step_results_and_checkpoints_fail_the_job_clearly(app: instar.App) -> None:
    @app.job(retry=instar.Retry(max_attempts=1))
    def odd(ctx: instar.Context) -> None:
        ctx.step("weird", object)

    job = odd.enqueue()
    app.run_worker(burst=True)
    failed = app.get(job.id)
    assert failed.state is S.FAILED
    assert failed.error is not None and "step 'weird'" in failed.error["message"]


def _race(*calls: Any) -> list[object]:
    """Run calls at the same moment in threads; each result or raised error."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # the loser's error is the result under test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_resumes_at_the_same_moment_one_wins_the_other_is_refused(app: instar.App) -> None:
    @app.job
    def work() -> None:
        return None

    job = work.enqueue(delay=600)
    app.pause(job.id)
    first, second = _race(lambda: app.resume(job.id), lambda: app.resume(job.id))
    outcomes = sorted(type(r).__name__ for r in (first, second))
    assert outcomes == ["InvalidTransition", "Job"]
    assert len([e for e in app.history(job.id) if e.trigger == "resumed"]) == 1


def test_two_answers_to_one_signal_at_the_same_moment_one_wins(app: instar.App) -> None:
    @app.job
    def approval(ctx: instar.Context) -> Any:
        return ctx.await_signal("approve")

    job = approval.enqueue()
    app.run_worker(burst=True)
    [awakeable] = app.awakeables(job.id)
    results = _race(
        lambda: app.resolve(awakeable.id, "yes"), lambda: app.reject(awakeable.id, "no")
    )
    assert sorted(type(r).__name__ for r in results) == ["Awakeable", "SignalAlreadySettled"]
    app.run_worker(burst=True)
    done = app.get(job.id)
    settled = app.awakeables(job.id)[0]
    if settled.state == "resolved":
        assert (done.state, done.result) == (S.COMPLETED, "yes")
    else:
        assert done.state is S.BACKING_OFF or done.state is S.FAILED


def test_a_cancel_racing_a_completion_leaves_one_consistent_end(app: instar.App) -> None:
    started = threading.Event()
    finish = threading.Event()

    @app.job
    def quick() -> str:
        started.set()
        finish.wait(10)
        return "done"

    job = quick.enqueue()
    with running_worker(app):
        assert started.wait(10)
        _race(finish.set, lambda: app.cancel(job.id))
        end = app.wait(job.id, timeout=10)
    assert end.state in (S.COMPLETED, S.CANCELLED)
    ends = [e for e in app.history(job.id) if e.from_state is S.RUNNING and e.to_state != S.RUNNING]
    assert len(ends) == 1
    assert ends[0].to_state is end.state
