"""Retention: finished jobs pruned with everything that hangs off them once
they are old enough, and never a job something still holds."""

from __future__ import annotations

from datetime import timedelta

import pytest

import instar
from instar.clock import FrozenClock
from instar.lifecycle import State
from instar.maintenance.pruning import PruneSettings, Pruning
from instar.maintenance.state_flows import StateFlows
from instar.store.contract import Scanned

DAY = 86400.0


def _finish(app: instar.App) -> None:
    """Run every ready job, then count their events into the state flows."""
    app.run_worker(burst=True)
    StateFlows(app.engine).run_once()


def _ids(app: instar.App) -> set[int]:
    return {job.id for job in app.jobs(limit=10_000)}


def test_old_finished_jobs_are_pruned_with_their_timelines_and_young_ones_kept(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app

    @app.job(name="work", retry=instar.Retry(max_attempts=1))
    def work(ctx: instar.Context, fail: bool = False) -> str:
        ctx.step("note", lambda: "kept with the job")
        if fail:
            raise ValueError("no")
        return "done"

    old_done = work.enqueue()
    old_failed = app.enqueue("work", {"fail": True})
    _finish(app)
    clock.advance(8 * DAY)
    young = work.enqueue()
    waiting = work.enqueue(delay=30 * DAY)  # scheduled: never pruned
    _finish(app)  # the worker's maintenance prunes what is due

    assert _ids(app) == {old_failed.id, young.id, waiting.id}
    assert app.reader.steps(old_done.id) == {}
    with pytest.raises(instar.JobNotFound):
        app.history(old_done.id)
    assert {e.job_id for e in app.events(0)} == {old_failed.id, young.id, waiting.id}
    assert app.prune().total == 0  # nothing more is due

    clock.advance(23 * DAY)  # the failed job is 31 days old, the young one 23: both due
    fresh = work.enqueue()
    pruned = app.prune().pruned
    assert pruned == {("default", State.FAILED): 1, ("default", State.COMPLETED): 1}
    assert _ids(app) == {waiting.id, fresh.id}


def test_a_job_others_wait_on_and_a_parent_with_children_are_kept_until_they_go(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app

    @app.job(name="child")
    def child() -> None: ...

    @app.job(name="parent")
    def parent(ctx: instar.Context) -> None:
        ctx.spawn(child)

    first = parent.enqueue()
    _finish(app)
    dependency = child.enqueue()
    _finish(app)
    dependant = child.enqueue(after=[dependency.id], delay=60 * DAY)  # still waiting
    clock.advance(10 * DAY)
    _finish(app)

    app.prune()
    kept = _ids(app)
    assert dependency.id in kept and dependant.id in kept  # a job waits on it
    assert first.id not in kept  # its child went first, then the parent
    assert [job.parent_id for job in app.jobs(limit=100)].count(first.id) == 0


def test_a_dry_run_counts_what_would_go_and_changes_nothing(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app
    app.job(name="work")(lambda: None)
    app.enqueue_many("work", [{}] * 5)
    _finish(app)
    clock.advance(2 * DAY)
    fresh = app.enqueue("work")
    before = (_ids(app), app.last_event_id())
    report = app.prune(older_than=timedelta(days=1), dry_run=True)
    assert report.total == 5 and report.pruned == {("default", State.COMPLETED): 5}
    assert (_ids(app), app.last_event_id()) == before
    assert app.prune(older_than=3 * DAY).total == 0  # not old enough for that
    assert app.prune(older_than=DAY, states=["cancelled"]).total == 0
    assert app.prune(older_than=DAY, states=["completed"]).total == 5
    assert _ids(app) == {fresh.id}


def test_finished_counts_leave_out_pruned_jobs_and_events_not_rolled_up_are_kept(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app
    app.job(name="work", queue="q")(lambda: None)
    for job in app.enqueue_many("work", [{}] * 4):
        app.cancel(job.id)  # no worker ran: nothing rolled their events up
    clock.advance(31 * DAY)
    app.enqueue("work")
    assert app.prune().total == 0
    assert len(_ids(app)) == 5
    StateFlows(app.engine).run_once()
    assert {(q, s): n for q, s, n in app.reader.finished_totals()} == {("q", State.CANCELLED): 4}
    assert app.prune().pruned == {("q", State.CANCELLED): 4}
    assert {(q, s): n for q, s, n in app.reader.finished_totals()} == {}
    flows = app.reader.flows_since(0)  # the throughput history stays
    assert sum(f.entered for f in flows if f.state is State.CANCELLED) == 4


def test_the_maintenance_scan_goes_round_in_windows_and_finds_jobs_kept_longer(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app
    app.job(name="work")(lambda: None)
    app.job(name="keep_long")(lambda: None)
    retention = instar.Retention(by_job={"keep_long": {"completed": 20 * DAY}})
    app.enqueue_many("keep_long", [{}] * 3)
    app.enqueue_many("work", [{}] * 7)
    _finish(app)
    clock.advance(8 * DAY)
    fresh = app.enqueue("work")
    service = Pruning(app.engine, retention, PruneSettings(window=4))
    for _ in range(5):
        service.run_once()
    assert {job.name for job in app.jobs(limit=100)} == {"keep_long", "work"}
    assert len(_ids(app)) == 4  # the three kept longer and the fresh one
    clock.advance(13 * DAY)
    for _ in range(3):
        service.run_once()
    assert _ids(app) == {fresh.id}
    assert app.reader.pruning_marks().pruned_through == app.last_event_id() - 1


def test_ids_are_never_given_twice_after_pruning(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app
    app.job(name="work")(lambda: None)
    old = app.enqueue_many("work", [{}] * 3)
    _finish(app)
    last_event = app.last_event_id()
    clock.advance(8 * DAY)
    app.prune()
    new = app.enqueue("work")
    assert new.id > max(job.id for job in old)
    assert min(e.id for e in app.history(new.id)) > last_event


def test_once_the_scan_has_gone_round_it_waits_its_interval(
    frozen_app: instar.App, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = frozen_app
    app.job(name="work")(lambda: None)
    app.enqueue_many("work", [{}] * 3)  # ready: never due, but old enough to be read past
    clock.advance(8 * DAY)
    scans: list[int] = []
    real = app.engine.read.prune_scan

    def counted(after_id: int, limit: int) -> list[Scanned]:
        scans.append(after_id)
        return real(after_id, limit)

    monkeypatch.setattr(app.engine.read, "prune_scan", counted)
    service = Pruning(app.engine, instar.Retention(), PruneSettings(window=2, interval=10))
    service.run_once()  # a full window: the round goes on at the next pass
    service.run_once()  # the rest: the round is over
    service.run_once()  # within the interval: no scan
    assert len(scans) == 2
    clock.advance(10)
    service.run_once()
    assert len(scans) == 3


def test_a_bad_retention_is_refused_with_what_is_wrong() -> None:
    with pytest.raises(instar.InvalidOption, match="not a finished state"):
        instar.Retention(by_queue={"q": {"running": 3600}})
    with pytest.raises(instar.InvalidOption, match="0 to"):
        instar.Retention(completed=float("nan"))
    with pytest.raises(instar.InvalidOption, match="seconds or a timedelta"):
        instar.Retention(failed="7d")  # type: ignore[arg-type]
