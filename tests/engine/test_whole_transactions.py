"""One logical change, one transaction: fault injection on every path that writes
more than one thing.

Each test lets the second part of a change fail (a statement of the same
transaction raises, as a dropped connection or a crash between the parts
would make it) and checks that nothing of the change was kept, then that the
change, tried again, ends where it should. The last test builds the state the
old two-transaction code could leave behind (a suspended job with nothing to
wake it) and checks that maintenance finds and wakes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import instar
from instar.clock import FrozenClock
from instar.engine import Raised, Returned, outcome_moves
from instar.lifecycle import State
from instar.maintenance.runner import Maintenance
from instar.models import Job
from instar.store.contract import ClaimRequest, Move
from instar.store.sql_store import SQLTransaction
from instar.vocabulary import DependencyKind
from tests.conftest import execute_raw

S = State


class InjectedFault(RuntimeError):
    """Stands for the database failing, or the process dying, mid-transaction."""


@contextmanager
def failing_once(monkeypatch: pytest.MonkeyPatch, method: str) -> Iterator[list[str]]:
    """Make ``SQLTransaction.<method>`` raise the first time it is called."""
    real = getattr(SQLTransaction, method)
    calls: list[str] = []

    def fail_first(tx: SQLTransaction, *args: Any, **kwargs: Any) -> Any:
        if not calls:
            calls.append(method)
            raise InjectedFault(f"{method} failed")
        return real(tx, *args, **kwargs)

    monkeypatch.setattr(SQLTransaction, method, fail_first)
    yield calls
    monkeypatch.setattr(SQLTransaction, method, real)


def moves_of(app: instar.App, job_id: int) -> list[tuple[State, str]]:
    """(state entered, trigger) of every move in the job's timeline."""
    return [(e.to_state, e.trigger) for e in app.history(job_id) if e.from_state != e.to_state]


def claim(app: instar.App, queue: str) -> Job:
    [job] = app.engine.exchange([], [], ClaimRequest("w", 1, [queue])).claimed
    return job


def finish(
    app: instar.App, job: Job, value: Any = None, error: Exception | None = None
) -> list[Move]:
    outcome = Returned(value) if error is None else Raised(error)
    retry = app.definition(job.name).options.retry
    return outcome_moves(job, outcome, retry=retry, now=app.clock.now(), max_payload_bytes=1 << 20)


def join_edges(app: instar.App, job_id: int) -> list[int]:
    return [j.id for j in app.engine.store.dependencies_of(job_id, DependencyKind.JOIN)]


def _parent_and_child(app: instar.App) -> tuple[Job, Job]:
    """A parent suspended in ctx.join on one child that is ready to run."""

    @app.job(name="child", queue="children")
    def child(n: int) -> int:
        return n

    @app.job(name="parent", queue="parents")
    def parent(ctx: instar.Context) -> int:
        return sum(ctx.join([ctx.spawn(child, n=5)]))

    job = parent.enqueue()
    app.run_worker(queues=["parents"], burst=True)
    [kid] = app.children(job.id)
    assert app.get(job.id).state is S.SUSPENDED
    return app.get(job.id), kid


def test_the_last_child_ending_wakes_its_parent_in_the_same_transaction(
    app: instar.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent, kid = _parent_and_child(app)
    running = claim(app, "children")
    done = finish(app, running, 5)
    with failing_once(monkeypatch, "remove_dependencies") as failed:
        with pytest.raises(InjectedFault):
            app.engine.exchange(done, [], None)
        assert failed
        # Nothing of the change stayed: the child still runs, the parent still waits on it.
        assert app.get(kid.id).state is S.RUNNING
        assert app.get(parent.id).state is S.SUSPENDED
        assert join_edges(app, parent.id) == [kid.id]
        assert app.engine.exchange(done, [], None).applied == [True]
    assert app.get(kid.id).state is S.COMPLETED
    assert moves_of(app, parent.id)[-1] == (S.READY, "children-ended")
    assert join_edges(app, parent.id) == []
    app.run_worker(queues=["parents"], burst=True)
    assert app.get(parent.id).result == 5


def test_a_parent_suspends_and_records_what_it_joins_in_the_same_transaction(
    app: instar.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.job(name="child", queue="children")
    def child(n: int) -> int:
        return n

    @app.job(name="parent", queue="parents")
    def parent(ctx: instar.Context) -> int:
        return sum(ctx.join([ctx.spawn(child, n=2), ctx.spawn(child, n=3)]))

    job = parent.enqueue()
    with failing_once(monkeypatch, "add_dependencies") as failed:
        app.run_worker(queues=["parents"], burst=True)  # the batch fails once, then is retried
        assert failed
    assert app.get(job.id).state is S.SUSPENDED
    assert sorted(join_edges(app, job.id)) == sorted(c.id for c in app.children(job.id))
    suspensions = [m for m in moves_of(app, job.id) if m[0] is S.SUSPENDED]
    assert len(suspensions) == 1, "the failed batch left no half of its suspension behind"
    app.run_worker(burst=True)
    assert app.get(job.id).result == 5


def test_a_dependency_completing_starts_its_dependant_in_the_same_transaction(
    app: instar.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.job(name="first", queue="firsts")
    def first() -> str:
        return "one"

    @app.job(name="then", queue="thens")
    def then() -> str:
        return "two"

    a = first.enqueue()
    b = app.enqueue(then, after=[a])
    running = claim(app, "firsts")
    done = finish(app, running, "one")
    with failing_once(monkeypatch, "lock_job") as failed:
        with pytest.raises(InjectedFault):
            app.engine.exchange(done, [], None)
        assert failed
        assert (app.get(a.id).state, app.get(b.id).state) == (S.RUNNING, S.PENDING)
        assert app.engine.exchange(done, [], None).applied == [True]
    assert (app.get(a.id).state, app.get(b.id).state) == (S.COMPLETED, S.READY)
    assert moves_of(app, b.id)[-1] == (S.READY, "dependencies-met")


def test_a_failure_cascades_down_a_chain_of_dependants_in_one_transaction(
    app: instar.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.job(name="link", queue="links", retry=instar.Retry(max_attempts=1))
    def link() -> None:
        return None

    a = link.enqueue()
    b = app.enqueue(link, after=[a])
    c = app.enqueue(link, after=[b])
    running = claim(app, "links")
    assert running.id == a.id
    failed_run = finish(app, running, error=instar.Fatal("broken"))
    calls = 0
    real = SQLTransaction.apply_moves

    def fail_on_third(tx: SQLTransaction, moves: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:  # a's failure, b's cascade, then c's: the last part breaks
            raise InjectedFault("apply_moves failed")
        return real(tx, moves)

    monkeypatch.setattr(SQLTransaction, "apply_moves", fail_on_third)
    with pytest.raises(InjectedFault):
        app.engine.exchange(failed_run, [], None)
    assert [app.get(j.id).state for j in (a, b, c)] == [S.RUNNING, S.PENDING, S.PENDING]
    monkeypatch.setattr(SQLTransaction, "apply_moves", real)
    assert app.engine.exchange(failed_run, [], None).applied == [True]
    assert [app.get(j.id).state for j in (a, b, c)] == [S.FAILED, S.FAILED, S.FAILED]


def test_an_operators_cancel_fails_the_dependants_in_the_same_transaction(
    app: instar.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.job(name="work")
    def work() -> None:
        return None

    a = work.enqueue(delay=60)
    b = app.enqueue(work, after=[a])
    with failing_once(monkeypatch, "waiting_on"):
        with pytest.raises(InjectedFault):
            app.cancel(a.id)
        assert (app.get(a.id).state, app.get(b.id).state) == (S.SCHEDULED, S.PENDING)
        app.cancel(a.id)
    assert (app.get(a.id).state, app.get(b.id).state) == (S.CANCELLED, S.FAILED)
    assert moves_of(app, b.id)[-1] == (S.FAILED, "dependency-failed")


def test_a_job_enqueued_after_ended_jobs_moves_on_in_its_own_transaction_or_not_at_all(
    app: instar.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.job(name="work")
    def work() -> None:
        return None

    done = work.enqueue()
    app.run_worker(burst=True)
    before = len(app.jobs())
    with failing_once(monkeypatch, "awaited"):
        with pytest.raises(InjectedFault):
            app.enqueue(work, after=[done])
        assert len(app.jobs()) == before, "a half-made job was left behind"
        late = app.enqueue(work, after=[done])
    assert late.state is S.READY
    assert moves_of(app, late.id) == [(S.PENDING, "enqueued"), (S.READY, "dependencies-met")]


def test_a_job_suspending_on_a_signal_already_answered_wakes_in_the_same_transaction(
    app: instar.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []

    @app.job(name="asker")
    def asker(ctx: instar.Context) -> Any:
        answer = ctx.await_signal("go")
        seen.append(answer)
        return answer

    job = asker.enqueue()
    running = claim(app, "default")
    awakeable = app.engine.awakeable(job.id, "go")
    app.resolve(awakeable.id, {"ok": True})  # answered before the handler suspends on it
    suspend = outcome_moves(
        running,
        instar.engine.Suspended(None, {"awaiting": awakeable.id}, awaiting=awakeable.id),
        retry=instar.Retry(),
        now=app.clock.now(),
        max_payload_bytes=1 << 20,
    )
    with failing_once(monkeypatch, "get_awakeable"):
        with pytest.raises(InjectedFault):
            app.engine.exchange(suspend, [], None)
        assert app.get(job.id).state is S.RUNNING
        assert app.engine.exchange(suspend, [], None).applied == [True]
    assert moves_of(app, job.id)[-2:] == [(S.SUSPENDED, "suspended"), (S.READY, "signal")]
    app.run_worker(burst=True)
    assert app.get(job.id).result == {"ok": True}


def test_resolving_a_signal_settles_it_and_wakes_its_job_together(
    app: instar.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.job(name="asker")
    def asker(ctx: instar.Context) -> Any:
        return ctx.await_signal("go")

    job = asker.enqueue()
    app.run_worker(burst=True)
    [awakeable] = app.awakeables(job.id)
    with failing_once(monkeypatch, "apply_moves"):
        with pytest.raises(InjectedFault):
            app.resolve(awakeable.id, 7)
        assert app.awakeables(job.id)[0].state == "pending"
        assert app.get(job.id).state is S.SUSPENDED
        app.resolve(awakeable.id, 7)
    assert app.get(job.id).state is S.READY
    app.run_worker(burst=True)
    assert app.get(job.id).result == 7


def test_a_signal_timing_out_and_its_job_waking_happen_together(
    frozen_app: instar.App, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = frozen_app

    @app.job(name="asker")
    def asker(ctx: instar.Context) -> str:
        try:
            return str(ctx.await_signal("go", timeout=30))
        except instar.SignalTimeout:
            return "too late"

    job = asker.enqueue()
    app.run_worker(burst=True)
    clock.advance(31)
    maintenance = Maintenance(app.engine, "m")
    real = SQLTransaction.settle_awakeable

    def broken(tx: SQLTransaction, settlement: Any) -> bool:
        raise InjectedFault("settle_awakeable failed")

    monkeypatch.setattr(SQLTransaction, "settle_awakeable", broken)
    assert maintenance.run_once()["timers"] == 0  # the wake-up failed with its timing out
    assert app.get(job.id).state is S.SUSPENDED
    assert app.awakeables(job.id)[0].state == "pending"
    monkeypatch.setattr(SQLTransaction, "settle_awakeable", real)
    assert maintenance.run_once()["timers"] == 1
    assert app.awakeables(job.id)[0].state == "timed-out"
    app.run_worker(burst=True)
    assert app.get(job.id).result == "too late"


def test_a_lost_worker_is_orphaned_and_its_job_requeued_together(
    frozen_app: instar.App, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = frozen_app

    @app.job(name="work", lease=5)
    def work() -> None:
        return None

    job = work.enqueue()
    claim(app, "default")
    clock.advance(6)
    real = SQLTransaction.apply_moves
    rounds: list[int] = []

    def fail_once_written(tx: SQLTransaction, moves: Any) -> Any:
        real(tx, moves)  # orphaned and re-queued are written ...
        rounds.append(len(moves))
        raise InjectedFault("... and then the transaction breaks")

    monkeypatch.setattr(SQLTransaction, "apply_moves", fail_once_written)
    assert Maintenance(app.engine, "m").run_once()["lease_rescue"] == 0
    assert rounds and app.get(job.id).state is S.RUNNING
    monkeypatch.setattr(SQLTransaction, "apply_moves", real)
    assert Maintenance(app.engine, "m").run_once()["lease_rescue"] == 1
    assert moves_of(app, job.id)[-2:] == [(S.ORPHANED, "lease-expired"), (S.READY, "requeued")]


def test_maintenance_wakes_a_suspended_job_that_nothing_could_wake_and_says_so(
    app: instar.App,
) -> None:
    """The state the old code left after a crash between deleting a parent's join
    edges and waking it: suspended, no timer, no pending signal, no child."""
    parent, _ = _parent_and_child(app)
    app.run_worker(queues=["children"], burst=True)
    # Undo the wake-up behind the engine's back, as the lost second transaction did.
    execute_raw(app.database, "UPDATE jobs SET state = 'suspended' WHERE id = ?", (parent.id,))
    assert join_edges(app, parent.id) == []
    assert app.get(parent.id).state is S.SUSPENDED
    assert Maintenance(app.engine, "m").run_once()["waiters"] == 1
    last = app.history(parent.id)[-1]
    assert (last.to_state, last.trigger, last.actor) == (S.READY, "stranded", "system")
    assert "no timer, no pending signal and no child" in last.detail["reason"]
    app.run_worker(queues=["parents"], burst=True)
    assert app.get(parent.id).result == 5


def test_maintenance_leaves_alone_a_suspended_job_that_something_will_wake(
    app: instar.App,
) -> None:
    @app.job(name="asker")
    def asker(ctx: instar.Context) -> Any:
        return ctx.await_signal("go")

    @app.job(name="sleeper")
    def sleeper(ctx: instar.Context) -> None:
        ctx.sleep(3600)

    signalled = asker.enqueue()
    sleeping = sleeper.enqueue()
    parent, _ = _parent_and_child(app)
    app.run_worker(queues=["default"], burst=True)
    assert {app.get(j.id).state for j in (signalled, sleeping, parent)} == {S.SUSPENDED}
    assert Maintenance(app.engine, "m").run_once()["waiters"] == 0
    assert {app.get(j.id).state for j in (signalled, sleeping, parent)} == {S.SUSPENDED}
