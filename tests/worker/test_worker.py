"""The worker: running, retrying, cancelling, timing out, shutting down."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import pytest

import instar
from instar.lifecycle import State
from instar.worker import loop
from instar.worker.loop import Worker, WorkerSettings
from tests.conftest import running_worker

S = State


def _path(app: instar.App, job_id: int) -> list[tuple[State | None, State]]:
    return [(e.from_state, e.to_state) for e in app.history(job_id) if e.from_state != e.to_state]


def test_a_job_runs_and_its_result_is_stored(app: instar.App) -> None:
    @app.job
    def add(a: int, b: int) -> int:
        return a + b

    job = add.enqueue(a=2, b=3)
    report = app.run_worker(burst=True)
    done = app.get(job.id)
    assert (done.state, done.result, done.attempt) == (S.COMPLETED, 5, 1)
    assert report.completed == 1
    assert _path(app, job.id) == [(None, S.READY), (S.READY, S.RUNNING), (S.RUNNING, S.COMPLETED)]


def test_async_and_sync_handlers_both_run(app: instar.App) -> None:
    @app.job
    async def hello(name: str) -> str:
        await asyncio.sleep(0)
        return f"hello {name}"

    @app.job
    def shout(ctx: instar.Context, name: str) -> str:
        return f"{name.upper()} (attempt {ctx.attempt})"

    a, b = hello.enqueue(name="ada"), shout.enqueue(name="bob")
    app.run_worker(burst=True)
    assert app.get(a.id).result == "hello ada"
    assert app.get(b.id).result == "BOB (attempt 1)"


def test_higher_priority_runs_first_then_older(app: instar.App) -> None:
    order: list[int] = []

    @app.job
    def record(n: int) -> None:
        order.append(n)

    record.enqueue(n=1)
    record.enqueue(n=2, priority=10)
    record.enqueue(n=3)
    record.enqueue(n=4, priority=10)
    app.run_worker(concurrency=1, burst=True)
    assert order == [2, 4, 1, 3]


def test_a_worker_takes_only_its_queues(app: instar.App) -> None:
    @app.job(queue="images")
    def resize() -> None:
        return None

    @app.job(queue="mail")
    def send() -> None:
        return None

    image, mail = resize.enqueue(), send.enqueue()
    app.run_worker(queues=["images"], burst=True)
    assert app.get(image.id).state is S.COMPLETED
    assert app.get(mail.id).state is S.READY


def test_a_failing_job_backs_off_and_succeeds_on_a_later_attempt(app: instar.App) -> None:
    @app.job(retry=instar.Retry(max_attempts=3, initial_interval=0.01, jitter=0))
    def flaky(ctx: instar.Context) -> str:
        if ctx.attempt < 3:
            raise RuntimeError(f"flake {ctx.attempt}")
        return "ok"

    job = flaky.enqueue()
    with running_worker(app):
        done = app.wait(job.id, timeout=10)
    assert (done.state, done.attempt, done.result) == (S.COMPLETED, 3, "ok")
    assert _path(app, job.id) == [
        (None, S.READY),
        (S.READY, S.RUNNING),
        (S.RUNNING, S.BACKING_OFF),
        (S.BACKING_OFF, S.READY),
        (S.READY, S.RUNNING),
        (S.RUNNING, S.BACKING_OFF),
        (S.BACKING_OFF, S.READY),
        (S.READY, S.RUNNING),
        (S.RUNNING, S.COMPLETED),
    ]
    backoffs = [e for e in app.history(job.id) if e.to_state is S.BACKING_OFF]
    assert backoffs[0].detail["type"] == "RuntimeError"
    assert backoffs[0].detail["message"] == "flake 1"
    assert "Traceback" in backoffs[0].detail["traceback"]


def test_exhausted_retries_fail_the_job_with_its_error(app: instar.App) -> None:
    @app.job(retry=instar.Retry(max_attempts=2, initial_interval=0.01, jitter=0))
    def broken() -> None:
        raise ValueError("bad data")

    job = broken.enqueue()
    with running_worker(app):
        done = app.wait(job.id, timeout=10)
    assert (done.state, done.attempt) == (S.FAILED, 2)
    assert done.error is not None and done.error["message"] == "bad data"
    assert app.history(job.id)[-1].trigger == "retries-exhausted"


def test_exhausted_retries_pause_the_job_under_on_exhausted_pause(app: instar.App) -> None:
    @app.job(retry=instar.Retry(max_attempts=1, on_exhausted="pause"))
    def broken() -> None:
        raise ValueError("needs a person")

    job = broken.enqueue()
    app.run_worker(burst=True)
    assert app.get(job.id).state is S.PAUSED


def test_fatal_fails_at_once_without_retry(app: instar.App) -> None:
    @app.job(retry=instar.Retry(max_attempts=5))
    def doomed() -> None:
        raise instar.Fatal("input can never work")

    job = doomed.enqueue()
    app.run_worker(burst=True)
    done = app.get(job.id)
    assert (done.state, done.attempt) == (S.FAILED, 1)
    assert done.error is not None and done.error["type"] == "Fatal"


def test_error_types_listed_as_fatal_are_not_retried(app: instar.App) -> None:
    @app.job(retry=instar.Retry(max_attempts=5, fatal=(KeyError,)))
    def lookup() -> None:
        raise KeyError("missing")

    job = lookup.enqueue()
    app.run_worker(burst=True)
    assert app.get(job.id).state is S.FAILED


def test_a_result_that_is_not_json_fails_the_job_instead_of_vanishing(app: instar.App) -> None:
    @app.job(retry=instar.Retry(max_attempts=1))
    def odd() -> object:
        return object()

    job = odd.enqueue()
    app.run_worker(burst=True)
    done = app.get(job.id)
    assert done.state is S.FAILED
    assert done.error is not None and "JSON" in done.error["message"]


def test_a_handler_past_its_timeout_counts_as_a_failed_attempt(app: instar.App) -> None:
    @app.job(timeout=0.05, retry=instar.Retry(max_attempts=1))
    async def slow() -> None:
        await asyncio.sleep(10)

    job = slow.enqueue()
    app.run_worker(burst=True)
    done = app.get(job.id)
    assert done.state is S.FAILED
    assert done.error is not None and "timeout of 0.05s" in done.error["message"]


def test_a_job_whose_handler_a_worker_lacks_waits_for_a_worker_that_has_it(
    database: str,
) -> None:
    """A rolling deploy: an old worker must not fail jobs that only new workers know."""
    with instar.App(database) as producer:

        @producer.job(name="mystery")
        def mystery() -> str:
            return "solved"

        job = mystery.enqueue()
        with instar.App(database) as old_worker:

            @old_worker.job(name="something_else")
            def something_else() -> None:
                return None

            old_worker.run_worker(burst=True)
            waiting = old_worker.get(job.id)
            assert (waiting.state, waiting.attempt) == (S.READY, 0), "left for another worker"
            assert [e.trigger for e in old_worker.history(job.id)] == ["enqueued"]
        producer.run_worker(burst=True)
        assert producer.get(job.id).result == "solved"


def test_an_operator_retry_runs_a_failed_job_again(app: instar.App) -> None:
    calls: list[int] = []

    @app.job(retry=instar.Retry(max_attempts=1))
    def once_broken() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first time")
        return "fixed"

    job = once_broken.enqueue()
    app.run_worker(burst=True)
    assert app.get(job.id).state is S.FAILED
    assert app.retry(job.id).state is S.READY
    app.run_worker(burst=True)
    done = app.get(job.id)
    assert (done.state, done.result) == (S.COMPLETED, "fixed")
    retried = [e for e in app.history(job.id) if e.trigger == "retried"]
    assert retried[0].detail == {"previous_attempts": 1}


def test_progress_and_phase_go_into_the_job_and_its_timeline(app: instar.App) -> None:
    @app.job
    def crunch(ctx: instar.Context) -> None:
        ctx.phase("preparing")
        ctx.progress(1, 4, "one")
        ctx.progress(4, 4, "all")

    job = crunch.enqueue()
    app.run_worker(burst=True)
    done = app.get(job.id)
    assert done.progress == instar.Progress(4, 4, "all")
    notes = [(e.trigger, e.detail) for e in app.history(job.id) if e.from_state == e.to_state]
    assert notes == [
        ("phase", {"phase": "preparing"}),
        ("progress", {"current": 1, "total": 4, "message": "one"}),
        ("progress", {"current": 4, "total": 4, "message": "all"}),
    ]


def test_progress_is_visible_while_the_job_still_runs(database: str) -> None:
    reported = threading.Event()
    release = threading.Event()
    with instar.App(database) as app, instar.App(database) as observer:

        @app.job
        def crunch(ctx: instar.Context) -> None:
            ctx.progress(3, 10, "three")
            reported.set()
            release.wait(30)

        job = crunch.enqueue()
        try:
            with running_worker(app):
                assert reported.wait(10)
                deadline = time.monotonic() + 10
                while observer.get(job.id).progress is None and time.monotonic() < deadline:
                    time.sleep(0.01)
                seen = observer.get(job.id)
                release.set()
                assert (seen.state, seen.progress) == (S.RUNNING, instar.Progress(3, 10, "three"))
        finally:
            release.set()


def test_cancelling_a_running_async_job_cancels_its_task(app: instar.App) -> None:
    started = threading.Event()

    @app.job
    async def forever() -> None:
        started.set()
        await asyncio.sleep(60)

    job = forever.enqueue()
    with running_worker(app):
        assert started.wait(10)
        asked = app.cancel(job.id)
        assert asked.state is S.RUNNING and asked.cancel_requested
        done = app.wait(job.id, timeout=10)
    assert done.state is S.CANCELLED
    triggers = [e.trigger for e in app.history(job.id)]
    assert triggers[-2:] == ["cancel-requested", "cancelled"]


def test_a_sync_job_sees_ctx_cancelled_and_stops(app: instar.App) -> None:
    started = threading.Event()

    @app.job
    def loop_until_cancelled(ctx: instar.Context) -> str:
        started.set()
        deadline = time.monotonic() + 30
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        return "stopped"

    job = loop_until_cancelled.enqueue()
    with running_worker(app):
        assert started.wait(10)
        app.cancel(job.id)
        done = app.wait(job.id, timeout=10)
    assert done.state is S.CANCELLED
    assert done.result is None


def test_a_job_that_ignores_cancel_is_cancelled_after_the_grace_period(app: instar.App) -> None:
    started = threading.Event()
    release = threading.Event()

    @app.job
    def stubborn() -> None:
        started.set()
        release.wait(30)

    job = stubborn.enqueue()
    try:
        with running_worker(app, cancel_grace=0.2):
            assert started.wait(10)
            app.cancel(job.id)
            assert app.wait(job.id, timeout=10).state is S.CANCELLED
    finally:
        release.set()


def test_stopping_releases_unfinished_jobs_to_ready_without_counting_the_attempt(
    app: instar.App,
) -> None:
    started = threading.Event()

    @app.job
    async def long() -> None:
        started.set()
        await asyncio.sleep(60)

    job = long.enqueue()
    with running_worker(app, shutdown_grace=0.1):
        assert started.wait(10)
    released = app.get(job.id)
    assert (released.state, released.attempt, released.rerun) == (S.READY, 1, True)
    assert released.worker is None, "a job handed back names no worker"
    assert app.history(job.id)[-1].trigger == "released"


def test_stopping_lets_running_jobs_finish_within_the_grace_period(app: instar.App) -> None:
    started = threading.Event()

    @app.job
    async def short() -> str:
        started.set()
        await asyncio.sleep(0.2)
        return "finished"

    job = short.enqueue()
    with running_worker(app, shutdown_grace=10):
        assert started.wait(10)
    assert app.get(job.id).state is S.COMPLETED


def test_an_idle_worker_picks_up_a_job_enqueued_later(app: instar.App) -> None:
    @app.job
    def ping() -> str:
        return "pong"

    with running_worker(app):
        time.sleep(0.05)
        job = ping.enqueue()
        assert app.wait(job.id, timeout=10).result == "pong"


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_claim_that_empties_the_queue_is_not_followed_by_another_at_once(
    database: str,
) -> None:
    # PostgreSQL: the next job comes with a wake-up from the database (SQLite's
    # worker polls, and its own commit counts as a change there). The job comes
    # from another App, as from another process: one wake-up.
    started, release = threading.Event(), threading.Event()
    claims: list[int] = []
    with instar.App(database) as worker_app, instar.App(database) as client:

        @worker_app.job(name="hold")
        def hold() -> None:
            started.set()
            release.wait(10)

        exchange = worker_app.engine.exchange

        def counted(*args: Any, **kwargs: Any) -> Any:
            batch = exchange(*args, **kwargs)
            claim = args[2] if len(args) > 2 else kwargs.get("claim")
            if claim is not None and claim.limit > 0:
                claims.append(len(batch.claimed))
            return batch

        worker_app.engine.exchange = counted  # type: ignore[method-assign]
        client.registry.add(hold)
        with running_worker(worker_app, concurrency=4):
            time.sleep(0.1)
            claims.clear()
            client.enqueue("hold")
            assert started.wait(10)
            time.sleep(0.3)
            assert claims == [1]  # one claim took the job; none followed it at once
            release.set()


def test_a_worker_from_another_app_notices_new_jobs_through_the_database(database: str) -> None:
    with instar.App(database) as worker_app, instar.App(database) as client:

        @worker_app.job(name="ping")
        def ping() -> str:
            return "pong"

        client.registry.add(ping)
        with running_worker(worker_app):
            time.sleep(0.05)
            job = client.enqueue("ping")
            assert client.wait(job.id, timeout=10).result == "pong"


def test_concurrency_bounds_the_jobs_running_at_once(app: instar.App) -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    @app.job
    def busy() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    app.enqueue_many(busy, [{}] * 20)
    app.run_worker(concurrency=3, burst=True)
    assert peak == 3
    assert app.counts() == {S.COMPLETED: 20}


def test_a_backlog_is_reported_in_batches_of_many_runs_not_a_batch_per_few(
    app: instar.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each batch waits for reports while jobs claimed ahead keep the slots busy;
    # written back to back, each batch would carry the few runs that ended
    # during the last one (10 slots of 1 ms runs: 10 to 20). A long
    # claim_ahead_wait lets the worker claim its 500 ahead from its first pace.
    monkeypatch.setattr(loop, "GATHER_WAIT", 0.25)

    @app.job(name="tick")
    def tick() -> None:
        time.sleep(0.001)

    app.enqueue_many(tick, [{}] * 3000)
    app.run_worker(concurrency=10, burst=True, claim_ahead_wait=10)
    assert app.counts() == {S.COMPLETED: 3000}
    batches = Counter(event.at for event in app.events(state=S.COMPLETED))
    in_big_batches = sum(n for n in batches.values() if n >= 100)
    assert in_big_batches >= 1500, f"batches of runs: {sorted(batches.values())}"


def test_a_worker_refuses_zero_concurrency(app: instar.App) -> None:

    with pytest.raises(ValueError, match="at least 1"):
        Worker(app.engine, app.registry, WorkerSettings(concurrency=0))


def test_a_batch_the_database_refuses_is_written_on_a_later_try(
    app: instar.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    @app.job
    def add(a: int, b: int) -> int:
        return a + b

    job = add.enqueue(a=1, b=2)
    real_exchange = app.engine.exchange
    failures: list[object] = []

    def flaky_exchange(*args: Any) -> Any:
        moves = args[0]
        if moves and not failures:
            failures.append(moves)
            raise sqlite3.OperationalError("database is locked")
        return real_exchange(*args)

    monkeypatch.setattr(app.engine, "exchange", flaky_exchange)
    app.run_worker(burst=True)
    assert failures, "the first report should have been refused"
    done = app.get(job.id)
    assert (done.state, done.result) == (S.COMPLETED, 3)
