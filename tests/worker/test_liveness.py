"""Liveness: a live worker keeps its jobs, a lost worker's jobs come back, and no
job runs twice at once: slots, heartbeats, clocks, claims ahead and stops."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import instar
from instar.clock import DatabaseClock, FrozenClock
from instar.engine import Outcome, Returned
from instar.engine import outcome_moves as engine_outcome_moves
from instar.lifecycle import State
from instar.maintenance import lease_rescue
from instar.maintenance.runner import Maintenance
from instar.store.contract import Term
from instar.worker.loop import RECHECKED_LATELY
from tests.conftest import running_worker
from tests.factory import job_in

S = State


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"not met within {timeout}s: {what or predicate}")


def moves(app: instar.App, job_id: int) -> list[State]:
    return [e.to_state for e in app.history(job_id) if e.from_state != e.to_state]


# -- 1. slots, threads and leases tell the truth -----------------------------------------


def test_a_def_handler_past_its_timeout_keeps_its_slot_and_nothing_is_claimed_for_it(
    app: instar.App,
) -> None:
    release = threading.Event()

    @app.job(name="hang", timeout=0.5, retry=instar.Retry(max_attempts=1))
    def hang() -> None:
        release.wait(30)

    @app.job(name="quick")
    def quick() -> str:
        return "ran"

    hung = [hang.enqueue(), hang.enqueue()]
    try:
        with running_worker(app, concurrency=2) as worker:
            for job in hung:
                assert app.wait(job.id, timeout=10).state is S.FAILED, "failed on time"
            third = quick.enqueue()
            time.sleep(1.0)  # a worker with a free slot would have run it long ago
            waiting = app.get(third.id)
            assert (waiting.state, waiting.attempt) == (S.READY, 0), "no slot: not claimed"
            assert (worker.report.overruns, worker.report.slots_lost) == (2, 2)
            release.set()
            assert app.wait(third.id, timeout=10).result == "ran"
            wait_until(lambda: worker.report.slots_lost == 0, what="slots back")
    finally:
        release.set()
    error = app.get(hung[0].id).error
    assert error is not None and error["message"].endswith("ran past its timeout of 0.5s")


def test_a_timeout_counts_from_the_handlers_start_not_its_wait_for_a_thread(
    app: instar.App,
) -> None:
    release = threading.Event()

    @app.job(name="slow", timeout=0.3, retry=instar.Retry(max_attempts=1))
    def slow() -> None:
        release.wait(30)

    @app.job(name="patient", timeout=1.0)
    def patient() -> str:
        time.sleep(0.5)
        return "in time"

    try:
        with running_worker(app, concurrency=1):
            first = slow.enqueue()
            assert app.wait(first.id, timeout=10).state is S.FAILED
            second = patient.enqueue()
            time.sleep(1.5)  # longer than its timeout, waiting for the lost slot
            release.set()
            done = app.wait(second.id, timeout=10)
    finally:
        release.set()
    assert (done.state, done.attempt, done.result) == (S.COMPLETED, 1, "in time")


# -- 2. a clean stop gives everything back ---------------------------------------------------


def test_a_worker_that_stops_cleanly_gives_up_the_maintenance_leadership_at_once(
    database: str,
) -> None:
    with instar.App(database) as first:

        @first.job(name="later")
        def later() -> str:
            return "on time"

        first.run_worker(burst=True)  # leads maintenance while it runs, then stops
        job = later.enqueue(delay=0.5)
        began = time.monotonic()
        with running_worker(first):
            done = first.wait(job.id, timeout=10)
        took = time.monotonic() - began
    assert done.result == "on time"
    assert took < 2.0, f"the timer fired {took:.1f}s after enqueue: leadership was held"


def test_a_stopped_worker_leaves_no_leadership_and_no_worker_behind(app: instar.App) -> None:
    @app.job(name="work")
    def work() -> None:
        return None

    work.enqueue()
    with running_worker(app) as worker:
        wait_until(lambda: any(w.id == worker.id for w in app.live_workers()), what="seen")
        mine = next(w for w in app.live_workers() if w.id == worker.id)
        assert "work" in mine.handlers and mine.concurrency == 4
    assert [w.id for w in app.live_workers()] == []
    assert app.engine.store.try_lead(Term("maintenance", "someone-else", 5), time.time())


# -- 3. a job whose handler a worker lacks is left to one that has it -------------------------


def test_names_stay_the_same_for_a_script_run_as_main(monkeypatch: pytest.MonkeyPatch) -> None:
    main = type(sys)("__main__")
    main.__file__ = "/srv/shop.py"
    monkeypatch.setitem(sys.modules, "__main__", main)
    app = instar.App("sqlite:///:memory:")

    def ship(n: int) -> int:
        return n

    ship.__module__, ship.__qualname__ = "__main__", "ship"
    assert app.job(ship).name == "shop.ship"


SHOP = """
import os, instar
app = instar.App(os.environ["SHOP_DATABASE"])

@app.job
def ship(order: int) -> str:
    return f"shipped {order}"

if __name__ == "__main__":
    print(ship.enqueue(order=7).name)
"""


def test_a_job_enqueued_by_a_script_runs_on_a_worker_that_imports_it(
    database: str, tmp_path: Path
) -> None:
    (tmp_path / "shop.py").write_text(SHOP)
    env = {**os.environ, "SHOP_DATABASE": database}
    run = functools.partial(
        subprocess.run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    made = run([sys.executable, "shop.py"])
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "shop.ship", "not __main__.ship"
    worked = run(
        [sys.executable, "-m", "instar.cli.main", "worker", "--app", "shop:app", "--burst"]
    )
    assert worked.returncode == 0, worked.stderr
    assert "1 completed" in worked.stderr
    with instar.App(database) as app:
        [job] = app.jobs()
        assert (job.name, job.result) == ("shop.ship", "shipped 7")


def test_listing_by_a_short_name_finds_the_jobs_of_that_handler(app: instar.App) -> None:
    @app.job(name="tests.shop.ship")
    def ship() -> None:
        return None

    job = ship.enqueue()
    assert [j.id for j in app.jobs(name="ship")] == [job.id]
    assert [j.id for j in app.jobs(name="tests.shop.ship")] == [job.id]
    assert app.jobs(name="hip") == []


# -- 4. a live worker's jobs are never orphaned; maintenance never stops -------------------


def run_beside_a_rescuer(app: instar.App, elsewhere: instar.App, job_id: int) -> None:
    """Run ``app``'s worker until the job completes (10 s at most), while
    another process's maintenance (``elsewhere``) judges its lease every 0.1 s."""
    rescuer = Maintenance(elsewhere.engine, "elsewhere")
    with running_worker(app):
        deadline = time.monotonic() + 10
        while app.get(job_id).state is not S.COMPLETED and time.monotonic() < deadline:
            rescuer.run_once()
            time.sleep(0.1)


def test_an_async_handler_that_blocks_its_loop_keeps_its_lease(database: str) -> None:
    with instar.App(database) as app, instar.App(database) as elsewhere:

        @app.job(name="blocker", lease=1.0)
        async def blocker() -> str:
            time.sleep(3)  # blocks the worker's event loop: no await for 3 s
            return "done once"

        job = blocker.enqueue()
        run_beside_a_rescuer(app, elsewhere, job.id)
        assert app.get(job.id).result == "done once"
        assert S.ORPHANED not in moves(app, job.id)


def test_a_job_whose_end_the_database_will_not_take_yet_keeps_its_lease(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report batch that fails (a deadlock, a dropped connection) is tried
    again with backoff, for longer than a short lease lasts: the job has ended,
    but its end is not written, so it still runs in the database under this
    worker's lease, which the heartbeat keeps alive until the report lands."""
    with instar.App(database) as app, instar.App(database) as elsewhere:

        @app.job(name="quick", lease=0.6)
        def quick() -> str:
            return "done once"

        real_exchange = app.engine.exchange
        refused_until: list[float] = []

        def reports_refused_for_two_seconds(*args: Any, **kwargs: Any) -> Any:
            if args[0]:  # moves: the job's end
                refused_until[:] = refused_until or [time.monotonic() + 2.0]
                if time.monotonic() < refused_until[0]:
                    raise instar.DatabaseUnavailable("server closed the connection unexpectedly")
            return real_exchange(*args, **kwargs)

        monkeypatch.setattr(app.engine, "exchange", reports_refused_for_two_seconds)
        job = quick.enqueue()
        run_beside_a_rescuer(app, elsewhere, job.id)
        assert refused_until, "the job's end should have been refused for a while"
        assert moves(app, job.id) == [S.READY, S.RUNNING, S.COMPLETED]
        assert app.get(job.id).result == "done once"


def test_a_lost_service_that_was_stopping_fails_and_the_sweep_goes_on(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app
    stopping = job_in(app, S.STOPPING)
    running = job_in(app, S.RUNNING)
    clock.advance(31)  # both leases (30 s) ran out: their worker is gone
    assert Maintenance(app.engine, "m").run_once()["lease_rescue"] == 2
    lost = app.get(stopping.id)
    assert lost.state is S.FAILED
    assert lost.error is not None and lost.error["type"] == "WorkerLost"
    assert moves(app, running.id)[-2:] == [S.ORPHANED, S.READY]
    with pytest.raises(instar.InvalidTransition, match="cancel applies only"):
        app.cancel(job_in(app, S.STOPPING).id)


def test_one_row_maintenance_cannot_handle_is_reported_and_skipped(
    frozen_app: instar.App,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = frozen_app
    bad, good = job_in(app, S.RUNNING), job_in(app, S.RUNNING)
    real = lease_rescue._rescue

    def rescue(job: instar.Job) -> Any:
        if job.id == bad.id:
            raise ValueError("a row nobody can read")
        return real(job)

    monkeypatch.setattr(lease_rescue, "_rescue", rescue)
    clock.advance(31)
    with caplog.at_level(logging.WARNING, logger="instar.maintenance"):
        assert Maintenance(app.engine, "m").run_once()["lease_rescue"] == 1
    assert moves(app, good.id)[-2:] == [S.ORPHANED, S.READY]
    assert app.get(bad.id).state is S.RUNNING
    assert f"skipped job {bad.id}" in caplog.text and "a row nobody can read" in caplog.text


def test_jobs_claimed_by_a_batch_whose_answer_was_lost_start_without_waiting_for_their_leases(
    app: instar.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch committed, then its connection broke before the answer came
    back (a server restart in pipeline mode does this): the jobs it claimed are
    running under this worker's name, unknown to it. The worker finds them and
    runs them, well before their 30 s leases would have brought them back."""

    @app.job(name="tick")
    def tick(n: int) -> int:
        return n

    real_exchange = app.engine.exchange
    lost: list[int] = []

    def answer_lost_once(*args: Any, **kwargs: Any) -> Any:
        batch = real_exchange(*args, **kwargs)
        if not lost and batch.claimed:
            lost.append(len(batch.claimed))
            raise instar.DatabaseUnavailable("server closed the connection unexpectedly")
        return batch

    monkeypatch.setattr(app.engine, "exchange", answer_lost_once)
    jobs = app.enqueue_many("tick", [{"n": n} for n in range(20)])
    with running_worker(app, concurrency=2) as worker:
        wait_until(
            lambda: app.counts().get(S.COMPLETED, 0) == len(jobs),
            timeout=10,
            what="all jobs completed",
        )
    assert lost, "a batch that claimed should have lost its answer once"
    assert (worker.report.completed, worker.report.refused) == (len(jobs), 0)
    for job in jobs:
        assert moves(app, job.id) == [S.READY, S.RUNNING, S.COMPLETED], f"job {job.id}"


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
@pytest.mark.parametrize("half", ["reports", "claims", "both"])
def test_when_reports_and_claims_go_side_by_side_a_failed_half_loses_nothing_of_the_other(
    app: instar.App, monkeypatch: pytest.MonkeyPatch, half: str
) -> None:
    """On PostgreSQL a batch's reports and its claim are two transactions at
    once. The reports failing must not drop what the claim took (those jobs
    would sit running until their leases ran out), and the claim failing must
    not drop the reports, nor, when its answer was lost after it committed, the
    jobs it took; nor when both fail at once: every job completes once, on time."""

    @app.job(name="tick")
    def tick(n: int) -> int:
        time.sleep(0.002)
        return n

    real_exchange = app.engine.exchange
    failed: list[str] = []

    def one_half_fails_once(finished: Any, notes: Any, claim: Any, recheck: Any = ()) -> Any:
        # The claims half runs on a connection (and a thread) of its own.
        on_claims_thread = threading.current_thread().name.startswith("instar-claims")
        this_half = "claims" if on_claims_thread else "reports" if claim is None else "one"
        if this_half == "one" or this_half in failed or half not in (this_half, "both"):
            return real_exchange(finished, notes, claim, recheck)
        failed.append(this_half)
        if this_half == "claims":
            # The worst case: the claim committed, then its answer was lost.
            claimed = real_exchange(finished, notes, claim, recheck).claimed
            raise instar.DatabaseUnavailable(f"the answer to a claim of {len(claimed)} was lost")
        raise instar.DatabaseUnavailable("the reports transaction failed")

    monkeypatch.setattr(app.engine, "exchange", one_half_fails_once)
    jobs = app.enqueue_many("tick", [{"n": n} for n in range(300)])
    with running_worker(app, concurrency=4) as worker:
        wait_until(
            lambda: app.counts().get(S.COMPLETED, 0) == len(jobs),
            timeout=15,
            what="all jobs completed",
        )
    wanted = {"reports", "claims"} if half == "both" else {half}
    assert set(failed) == wanted, f"the {half} half should have failed once"
    assert (worker.report.completed, worker.report.refused) == (len(jobs), 0)
    for job in jobs:
        assert moves(app, job.id) == [S.READY, S.RUNNING, S.COMPLETED], f"job {job.id}"


# -- 5. time is the database's; a claim respects what came after it --------------------------


class SkewedClock:
    def __init__(self, skew: float) -> None:
        self.skew = skew

    def now(self) -> float:
        return time.time() + self.skew


def test_workers_with_skewed_clocks_judge_leases_and_timers_by_the_databases(
    database: str,
) -> None:
    behind = instar.App(database, clock=DatabaseClock(local=SkewedClock(-45)))
    ahead = instar.App(database, clock=DatabaseClock(local=SkewedClock(+45)))
    with behind, ahead:

        @behind.job(name="steady", lease=30)
        def steady() -> str:
            time.sleep(1.0)
            return "once"

        @ahead.job(name="delayed")
        def delayed() -> str:
            return "late enough"

        job = steady.enqueue()
        timer = delayed.enqueue(delay=30)
        rescuer = Maintenance(ahead.engine, "ahead")
        with running_worker(behind):
            deadline = time.monotonic() + 10
            while behind.get(job.id).state is not S.COMPLETED and time.monotonic() < deadline:
                rescuer.run_once()
                time.sleep(0.1)
        assert behind.get(job.id).result == "once"
        assert S.ORPHANED not in moves(behind, job.id)
        rescuer.run_once()
        assert ahead.get(timer.id).state is S.SCHEDULED, "30 s have not passed"


def test_a_job_claimed_ahead_honours_a_queue_pause_that_came_after_its_claim(
    app: instar.App,
) -> None:
    first_runs = threading.Event()
    go_on = threading.Event()
    ran: list[int] = []

    @app.job(name="step", queue="line")
    def step(n: int) -> int:
        ran.append(n)
        if n == 0:
            first_runs.set()
            go_on.wait(10)
        return n

    jobs = app.enqueue_many(step, [{"n": n} for n in range(3)])
    with running_worker(app, concurrency=1) as worker:
        assert first_runs.wait(10)
        wait_until(lambda: len(worker._buffer) > 0, what="a job claimed ahead")
        time.sleep(2 * RECHECKED_LATELY)  # asked after its last check: it must be honoured
        app.pause_queue("line")
        go_on.set()
        assert app.wait(jobs[0].id, timeout=10).state is S.COMPLETED
        time.sleep(0.5)
        assert ran == [0], "nothing started from the paused queue"
        assert [app.get(j.id).state for j in jobs[1:]] == [S.READY, S.READY]
        app.resume_queue("line")
        for job in jobs[1:]:
            assert app.wait(job.id, timeout=10).state is S.COMPLETED


def test_a_job_claimed_ahead_is_cancelled_without_running(app: instar.App) -> None:
    first_runs = threading.Event()
    go_on = threading.Event()
    ran: list[int] = []

    @app.job(name="step", queue="line")
    def step(n: int) -> int:
        ran.append(n)
        if n == 0:
            first_runs.set()
            go_on.wait(10)
        return n

    jobs = app.enqueue_many(step, [{"n": n} for n in range(2)])
    with running_worker(app, concurrency=1) as worker:
        assert first_runs.wait(10)
        wait_until(lambda: len(worker._buffer) > 0, what="a job claimed ahead")
        time.sleep(2 * RECHECKED_LATELY)
        assert app.cancel(jobs[1].id).cancel_requested
        go_on.set()
        assert app.wait(jobs[1].id, timeout=10).state is S.CANCELLED
    assert ran == [0]


def test_work_claimed_ahead_that_cannot_start_goes_back_for_an_idle_worker(
    database: str,
) -> None:
    with instar.App(database) as busy, instar.App(database) as idle:
        release = threading.Event()

        def register(app: instar.App) -> None:
            @app.job(name="long")
            def long() -> None:
                release.wait(20)

            @app.job(name="short")
            def short() -> str:
                return "done"

        register(busy)
        register(idle)
        try:
            with running_worker(busy, concurrency=1):
                slow = busy.enqueue("long")
                wait_until(lambda: busy.get(slow.id).state is S.RUNNING, what="long runs")
                began = time.monotonic()
                quick = busy.enqueue_many("short", [{}, {}])
                with running_worker(idle, concurrency=2):
                    for job in quick:
                        assert busy.wait(job.id, timeout=10).result == "done"
                took = time.monotonic() - began
                release.set()
        finally:
            release.set()
    assert took < 4.0, f"the short jobs waited {took:.1f}s behind the long one"


def test_sys_exit_in_a_handler_fails_its_job_and_the_worker_goes_on(app: instar.App) -> None:
    @app.job(name="quitter", retry=instar.Retry(max_attempts=3))
    def quitter() -> None:
        sys.exit(3)

    @app.job(name="async_quitter", retry=instar.Retry(max_attempts=3))
    async def async_quitter() -> None:
        await asyncio.sleep(0)
        raise SystemExit("bye")

    @app.job(name="after")
    def after() -> str:
        return "still working"

    jobs = [quitter.enqueue(), async_quitter.enqueue()]
    with running_worker(app, concurrency=1):
        for job in jobs:
            failed = app.wait(job.id, timeout=10)
            assert (failed.state, failed.attempt) == (S.FAILED, 1)
            assert failed.error is not None and "SystemExit" in failed.error["message"]
        assert app.wait(after.enqueue().id, timeout=10).result == "still working"


@pytest.mark.parametrize("kind", ["def", "async def"])
def test_a_fault_of_the_workers_own_ending_one_run_fails_that_job_and_the_others_go_on(
    app: instar.App,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    """Planning the move that ends a run is Instar's code, not the handler's; if
    it ever raises, the job still ends (failed, no retry) instead of staying
    running under a worker that keeps its lease alive, and the jobs ending
    beside it are not held up."""
    if kind == "def":

        @app.job(name="task", retry=instar.Retry(max_attempts=3))
        def task(n: int) -> int:
            return n

    else:

        @app.job(name="task", retry=instar.Retry(max_attempts=3))
        async def task(n: int) -> int:
            return n

    real = engine_outcome_moves

    def outcome_moves(job: instar.Job, outcome: Outcome, **kwargs: Any) -> Any:
        if job.args == {"n": 1} and isinstance(outcome, Returned):
            raise RuntimeError("a move nobody could plan")
        return real(job, outcome, **kwargs)

    monkeypatch.setattr("instar.worker.loop.outcome_moves", outcome_moves)
    jobs = [task.enqueue(n=n) for n in range(6)]
    with caplog.at_level(logging.ERROR, logger="instar"), running_worker(app, concurrency=6):
        ended = [app.wait(job.id, timeout=10) for job in jobs]
    assert [(j.state, j.result) for j in ended] == [
        (S.COMPLETED, 0),
        (S.FAILED, None),
        *((S.COMPLETED, n) for n in range(2, 6)),
    ]
    assert ended[1].attempt == 1 and ended[1].error is not None
    assert "a move nobody could plan" in ended[1].error["message"]
    assert f"job {jobs[1].id}: the worker could not end its run" in caplog.text


def test_maintenance_forgets_workers_unheard_of_for_a_day(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app
    app.engine.register_worker(
        instar.store.contract.WorkerInfo("gone", "host", 1, 4, None, ("work",))
    )
    assert [w.id for w in app.reader.live_workers(60)] == ["gone"]
    clock.advance(lease_rescue.FORGET_AFTER + 1)
    Maintenance(app.engine, "m").run_once()
    assert app.reader.live_workers(10 * lease_rescue.FORGET_AFTER) == []
