"""The timeline and the job's fields tell the truth: who moved a job, what it
holds now, how far its runs went."""

from __future__ import annotations

import threading
from typing import Any

import instar
from instar.clock import FrozenClock
from instar.lifecycle import State
from instar.maintenance.runner import Maintenance
from tests.conftest import running_worker

S = State


def test_moves_nobody_reported_from_a_worker_name_no_worker(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app

    @app.job(retry=instar.Retry(max_attempts=2, initial_interval=5, jitter=0))
    def flaky() -> None:
        raise RuntimeError("down")

    job = flaky.enqueue()
    app.run_worker(burst=True)  # ran on a worker that has exited since
    clock.advance(6)
    Maintenance(app.engine, "m").run_once()  # due: by the system
    app.pause(job.id, actor="cli")
    app.resume(job.id, actor="cli")
    app.cancel(job.id, actor="cli")
    events = app.history(job.id)
    by_worker = {e.trigger: e.worker for e in events if e.from_state != e.to_state}
    assert by_worker["claimed"] is not None and by_worker["retry-scheduled"] is not None
    for trigger in ("due", "paused", "resumed", "cancelled"):
        assert by_worker[trigger] is None, f"{trigger} names worker {by_worker[trigger]}"


def test_a_job_shows_only_what_its_current_state_holds(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app

    @app.job(retry=instar.Retry(max_attempts=2, initial_interval=5, jitter=0))
    def flaky(ctx: instar.Context) -> None:
        ctx.progress(1, 2, "half")
        raise RuntimeError("down")

    job = flaky.enqueue()
    app.run_worker(burst=True)
    backing_off = app.get(job.id)
    assert backing_off.next_retry_at is not None
    assert backing_off.worker is None, "no worker holds a job that backs off"
    clock.advance(6)
    Maintenance(app.engine, "m").run_once()
    ready = app.get(job.id)
    assert (ready.state, ready.worker, ready.progress, ready.next_retry_at) == (
        S.READY,
        None,
        None,
        None,
    )
    app.run_worker(burst=True)
    failed = app.get(job.id)
    assert (failed.state, failed.next_retry_at) == (S.FAILED, None)
    assert failed.worker is not None, "a failed job names the worker of its last run"


def test_a_job_handed_back_and_run_again_continues_its_attempt(app: instar.App) -> None:
    started = threading.Event()
    runs: list[int] = []

    @app.job(retry=instar.Retry(max_attempts=3))
    def waits(ctx: instar.Context) -> Any:
        runs.append(ctx.attempt)
        started.set()
        return ctx.await_signal("go")

    job = waits.enqueue()
    app.run_worker(burst=True)
    suspended = app.get(job.id)
    assert (suspended.state, suspended.attempt) == (S.SUSPENDED, 1), "it ran: attempt 1"
    [awakeable] = app.awakeables(job.id)
    app.resolve(awakeable.id, "yes")
    app.run_worker(burst=True)
    done = app.get(job.id)
    assert (done.state, done.attempt, runs) == (S.COMPLETED, 1, [1, 1])


def test_progress_lives_on_the_job_and_in_the_timeline_only_at_a_bounded_rate(
    app: instar.App,
) -> None:
    @app.job
    def pages(ctx: instar.Context) -> int:
        for page in range(1, 21):
            ctx.checkpoint({"page": page})
            ctx.progress(page, 20, f"page {page}")
        return 20

    job = pages.enqueue()
    with running_worker(app):
        assert app.wait(job.id, timeout=10).state is S.COMPLETED
    events = app.history(job.id)
    progress = [e for e in events if e.trigger == "progress"]
    checkpoints = [e for e in events if e.trigger == "checkpoint"]
    assert len(checkpoints) == 20, "checkpoints stay in the timeline"
    assert [e.detail["current"] for e in progress] == [1, 20], "the first and the last"
    final = app.get(job.id).progress
    assert final is not None and (final.current, final.message) == (20, "page 20")
