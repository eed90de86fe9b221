"""Transition listeners: called after this process's moves commit, with the job
and the event, filtered by state, name and queue; never a reason to change an
outcome."""

from __future__ import annotations

import logging
import threading

import pytest

import instar
import instar.listeners
from instar.lifecycle import State
from instar.models import Event, Job


def _handlers(app: instar.App) -> tuple[instar.app.BoundJob, instar.app.BoundJob]:
    @app.job(name="mail", queue="emails")
    def mail(to: str) -> str:
        return f"sent to {to}"

    @app.job(name="broken", retry=instar.Retry(max_attempts=1))
    def broken() -> None:
        raise ValueError("the upstream service said no")

    return mail, broken


def test_a_failure_reaches_its_listener_after_it_committed_with_the_job_and_its_event(
    app: instar.App,
) -> None:
    _, broken = _handlers(app)
    heard: list[tuple[Job, Event, State]] = []

    @app.on_transition(to="failed")
    def alert(job: Job, event: Event) -> None:
        committed = instar.App(app.database)  # another connection sees the move already
        heard.append((job, event, committed.get(job.id).state))
        committed.close()

    job = broken.enqueue()
    app.run_worker(burst=True)
    assert app.listeners.wait_idle()
    [(seen, event, elsewhere)] = heard
    assert (seen.id, seen.state, elsewhere) == (job.id, State.FAILED, State.FAILED)
    assert (event.from_state, event.to_state, event.trigger) == (
        State.RUNNING,
        State.FAILED,
        "retries-exhausted",
    )
    assert event.id == app.history(job.id)[-1].id


def test_every_move_of_a_job_reaches_a_listener_without_filters_once_in_order(
    app: instar.App,
) -> None:
    mail, _ = _handlers(app)
    heard: list[tuple[int, State | None, State]] = []
    app.on_transition()(lambda job, event: heard.append((job.id, event.from_state, event.to_state)))
    job = mail.enqueue(to="ada@example.com")
    app.run_worker(burst=True)
    assert app.listeners.wait_idle()
    assert heard == [
        (job.id, None, State.READY),
        (job.id, State.READY, State.RUNNING),
        (job.id, State.RUNNING, State.COMPLETED),
    ]


def test_listeners_hear_only_the_names_and_queues_they_ask_for(app: instar.App) -> None:
    mail, broken = _handlers(app)
    by_name: list[str] = []
    by_queue: list[str] = []
    app.on_transition(to=State.COMPLETED, name="mail")(lambda j, e: by_name.append(j.name))
    app.on_transition(queue="default")(lambda j, e: by_queue.append(e.to_state.value))
    mail.enqueue(to="ada@example.com")
    broken.enqueue()
    app.run_worker(burst=True)
    assert app.listeners.wait_idle()
    assert by_name == ["mail"]
    assert by_queue == ["ready", "running", "failed"]


def test_a_listener_that_raises_changes_nothing_and_the_others_still_hear(
    app: instar.App, caplog: pytest.LogCaptureFixture
) -> None:
    mail, _ = _handlers(app)
    heard: list[int] = []

    @app.on_transition(to="completed")
    def faulty(job: Job, event: Event) -> None:
        raise RuntimeError("the pager is down")

    app.on_transition(to="completed")(lambda job, event: heard.append(job.id))
    job = mail.enqueue(to="ada@example.com")
    with caplog.at_level(logging.ERROR, logger="instar.listeners"):
        app.run_worker(burst=True)
        assert app.listeners.wait_idle()
    assert app.get(job.id).state is State.COMPLETED and heard == [job.id]
    assert "listener" in caplog.text and "the pager is down" in caplog.text
    assert [e.to_state for e in app.history(job.id)].count(State.COMPLETED) == 1


def test_an_operators_verb_reaches_the_listeners_of_the_app_that_applied_it(
    app: instar.App,
) -> None:
    mail, _ = _handlers(app)
    heard: list[tuple[str | None, State]] = []
    app.on_transition(to="cancelled")(lambda job, event: heard.append((event.actor, job.state)))
    job = mail.enqueue(to="ada@example.com")
    app.cancel(job.id, "ops")
    assert app.listeners.wait_idle()
    assert heard == [("ops", State.CANCELLED)]


def test_a_listener_for_a_state_that_does_not_exist_is_refused() -> None:
    app = instar.App(":memory:")
    with pytest.raises(instar.InvalidOption, match="unknown state 'finished'"):
        app.on_transition(to="finished")


def test_with_a_clock_that_does_not_move_each_move_is_still_heard_once(
    frozen_app: instar.App,
) -> None:
    mail, _ = _handlers(frozen_app)
    heard: list[State] = []
    frozen_app.on_transition()(lambda job, event: heard.append(event.to_state))
    mail.enqueue(to="ada@example.com")
    frozen_app.run_worker(burst=True)
    assert frozen_app.listeners.wait_idle()
    assert heard == [State.READY, State.RUNNING, State.COMPLETED]


def test_listeners_far_behind_let_moves_go_unheard_saying_so_and_never_hold_a_commit(
    app: instar.App, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    mail, _ = _handlers(app)
    release = threading.Event()
    heard: list[int] = []

    def slow(job: Job, event: Event) -> None:
        release.wait(10)
        heard.append(job.id)

    monkeypatch.setattr(instar.listeners, "BACKLOG", 2)
    app.on_transition(to="ready")(slow)
    with caplog.at_level(logging.WARNING, logger="instar.listeners"):
        jobs = [mail.enqueue(to=f"{n}@example.com") for n in range(6)]  # none waits
        release.set()
        assert app.listeners.wait_idle()
    assert "not heard so far" in caplog.text
    assert 1 <= len(heard) < len(jobs) and set(heard) <= {j.id for j in jobs}
