"""Timers and lease rescue, on a clock the test moves."""

from __future__ import annotations

import instar
from instar.clock import FrozenClock
from instar.lifecycle import State
from instar.maintenance.runner import Maintenance
from instar.store.contract import ClaimRequest
from instar.worker.heartbeat import RENEWAL


def _claim(app: instar.App, worker: str = "w1") -> list[instar.Job]:
    return app.engine.exchange([], [], ClaimRequest(worker, 10, None)).claimed


def test_a_scheduled_job_becomes_ready_at_its_time_and_not_before(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    @frozen_app.job
    def later() -> None:
        return None

    job = later.enqueue(delay=60)
    maintenance = Maintenance(frozen_app.engine, "m")
    clock.advance(59.9)
    assert maintenance.run_once()["timers"] == 0
    assert frozen_app.get(job.id).state is State.SCHEDULED
    assert _claim(frozen_app) == []
    clock.advance(0.2)
    assert maintenance.run_once()["timers"] == 1
    assert frozen_app.get(job.id).state is State.READY
    assert [j.id for j in _claim(frozen_app)] == [job.id]


def test_a_backing_off_job_becomes_ready_at_its_next_retry_time(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    @frozen_app.job(retry=instar.Retry(initial_interval=10, jitter=0))
    def flaky() -> None:
        raise RuntimeError("flake")

    job = flaky.enqueue()
    frozen_app.run_worker(burst=True)
    backing_off = frozen_app.get(job.id)
    assert backing_off.state is State.BACKING_OFF
    assert backing_off.next_retry_at is not None
    assert backing_off.next_retry_at.timestamp() == clock.now() + 10
    maintenance = Maintenance(frozen_app.engine, "m")
    clock.advance(9)
    maintenance.run_once()
    assert frozen_app.get(job.id).state is State.BACKING_OFF
    clock.advance(1)
    maintenance.run_once()
    assert frozen_app.get(job.id).state is State.READY


def test_an_expired_lease_orphans_the_job_and_requeues_it(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    @frozen_app.job(lease=30)
    def work() -> None:
        return None

    job = work.enqueue()
    [claimed] = _claim(frozen_app)
    maintenance = Maintenance(frozen_app.engine, "m")
    clock.advance(29)
    assert maintenance.run_once()["lease_rescue"] == 0
    clock.advance(2)
    assert maintenance.run_once()["lease_rescue"] == 1
    rescued = frozen_app.get(job.id)
    assert (rescued.state, rescued.attempt, rescued.lease_token) == (State.READY, 1, None)
    rescue = frozen_app.history(job.id)[-2:]
    assert [(e.trigger, e.actor) for e in rescue] == [
        ("lease-expired", "system"),
        ("requeued", "system"),
    ]
    assert claimed.lease_token is not None


def test_a_heartbeat_keeps_the_lease_alive(frozen_app: instar.App, clock: FrozenClock) -> None:
    @frozen_app.job(lease=30)
    def work() -> None:
        return None

    jobs = frozen_app.enqueue_many(work, [{}, {}, {}])
    _claim(frozen_app, "w1")
    maintenance = Maintenance(frozen_app.engine, "m")
    clock.advance(20)
    held = frozen_app.engine.heartbeat("w1", [j.id for j in jobs], RENEWAL)
    assert sorted(h.job_id for h in held) == [j.id for j in jobs]
    clock.advance(20)
    assert maintenance.run_once()["lease_rescue"] == 0
    assert {frozen_app.get(j.id).state for j in jobs} == {State.RUNNING}


def test_a_job_lost_on_its_last_attempt_fails(frozen_app: instar.App, clock: FrozenClock) -> None:
    @frozen_app.job(lease=5, retry=instar.Retry(max_attempts=1))
    def work() -> None:
        return None

    job = work.enqueue()
    _claim(frozen_app)
    clock.advance(6)
    Maintenance(frozen_app.engine, "m").run_once()
    lost = frozen_app.get(job.id)
    assert lost.state is State.FAILED
    assert lost.error is not None and lost.error["type"] == "WorkerLost"


def test_a_cancel_requested_job_whose_worker_is_lost_ends_cancelled(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    @frozen_app.job(lease=5)
    def work() -> None:
        return None

    job = work.enqueue()
    _claim(frozen_app)
    frozen_app.cancel(job.id)
    clock.advance(6)
    Maintenance(frozen_app.engine, "m").run_once()
    assert frozen_app.get(job.id).state is State.CANCELLED


def test_a_zombie_workers_report_is_refused_and_recorded(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    from instar.engine import Returned, outcome_moves

    @frozen_app.job(lease=5)
    def work() -> None:
        return None

    job = work.enqueue()
    [zombie_view] = _claim(frozen_app, "zombie")
    clock.advance(6)
    Maintenance(frozen_app.engine, "m").run_once()
    [fresh] = _claim(frozen_app, "w2")
    late = outcome_moves(
        zombie_view,
        Returned("stale"),
        retry=instar.Retry(),
        now=clock.now(),
        max_payload_bytes=1000,
    )
    assert frozen_app.engine.exchange(late, [], None).applied == [False]
    current = frozen_app.get(job.id)
    assert (current.state, current.worker, current.result) == (State.RUNNING, "w2", None)
    last = frozen_app.history(job.id)[-1]
    assert (last.trigger, last.from_state, last.to_state) == (
        "refused",
        State.RUNNING,
        State.RUNNING,
    )
    assert last.detail["trigger"] == "completed"
    assert fresh.lease_token != zombie_view.lease_token


def test_only_one_process_leads_maintenance_at_a_time(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    first = Maintenance(frozen_app.engine, "a", leadership_ttl=5)
    second = Maintenance(frozen_app.engine, "b", leadership_ttl=5)
    assert first.run_if_leader() is not None
    assert second.run_if_leader() is None
    clock.advance(6)
    assert second.run_if_leader() is not None
    assert first.run_if_leader() is None
