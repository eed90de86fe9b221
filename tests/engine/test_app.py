"""The user's API: enqueueing, reading, and every kind of bad input."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

import pytest

import instar
from instar.app import BoundJob
from instar.clock import FrozenClock


def _register(app: instar.App) -> BoundJob:
    @app.job(name="resize", queue="images", retry=instar.Retry(max_attempts=5))
    def resize(ctx: instar.Context, path: str, width: int = 100) -> dict[str, object]:
        return {"path": path, "width": width}

    return resize


def test_enqueue_creates_a_ready_job_with_its_first_event(app: instar.App) -> None:
    resize = _register(app)
    job = resize.enqueue(path="a.png", width=10)
    assert job.state is instar.State.READY
    assert (job.name, job.queue, job.args, job.max_attempts) == (
        "resize",
        "images",
        {"path": "a.png", "width": 10},
        5,
    )
    assert app.get(job.id) == job
    [event] = app.history(job.id)
    assert (event.from_state, event.to_state, event.trigger, event.actor) == (
        None,
        instar.State.READY,
        "enqueued",
        "app",
    )


def test_a_delayed_job_is_scheduled_at_its_start_time(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    resize = _register(frozen_app)
    job = resize.enqueue(path="a.png", delay=30)
    assert job.state is instar.State.SCHEDULED
    assert job.run_at is not None
    assert math.isclose(job.run_at.timestamp(), clock.now() + 30, abs_tol=1e-3)


def test_run_at_takes_an_aware_datetime(app: instar.App) -> None:
    resize = _register(app)
    later = datetime.now(UTC) + timedelta(hours=1)
    job = resize.enqueue(path="a.png", run_at=later)
    assert job.state is instar.State.SCHEDULED
    assert job.run_at is not None and abs((job.run_at - later).total_seconds()) < 1e-3


def test_priority_queue_and_key_options(app: instar.App) -> None:
    resize = _register(app)
    job = resize.enqueue(path="a.png", priority=5, queue="urgent", key="resize:a.png")
    assert (job.priority, job.queue, job.key) == (5, "urgent", "resize:a.png")


def test_enqueue_with_a_known_key_returns_the_same_job(app: instar.App) -> None:
    resize = _register(app)
    first = resize.enqueue(path="a.png", key="k1")
    again = resize.enqueue(path="b.png", key="k1")
    assert again.id == first.id
    assert again.args == {"path": "a.png"}
    assert len(app.jobs()) == 1
    assert len(app.history(first.id)) == 1


def test_enqueue_many_creates_all_jobs_in_one_go(app: instar.App) -> None:
    resize = _register(app)
    jobs = app.enqueue_many(resize, [{"path": f"{i}.png"} for i in range(50)])
    assert [j.args["path"] for j in jobs] == [f"{i}.png" for i in range(50)]
    assert len({j.id for j in jobs}) == 50
    assert {j.state for j in app.jobs(limit=100)} == {instar.State.READY}
    assert all(len(app.history(j.id)) == 1 for j in jobs)


def test_enqueue_many_with_one_bad_item_writes_nothing(app: instar.App) -> None:
    resize = _register(app)
    with pytest.raises(instar.PayloadError):
        app.enqueue_many(resize, [{"path": "a.png"}, {"path": object()}])
    assert app.jobs() == []


def test_enqueue_async_creates_a_job(app: instar.App) -> None:
    resize = _register(app)
    job = asyncio.run(resize.enqueue_async(path="a.png"))
    assert app.get(job.id).args == {"path": "a.png"}


def test_jobs_filters_by_state_queue_and_name(app: instar.App) -> None:
    resize = _register(app)
    a = resize.enqueue(path="a.png")
    b = resize.enqueue(path="b.png", queue="other")
    resize.enqueue(path="c.png", delay=60)
    assert [j.id for j in app.jobs(queue="other")] == [b.id]
    assert [j.id for j in app.jobs(state="ready")] == [b.id, a.id]
    assert len(app.jobs(name="resize")) == 3
    assert len(app.jobs(limit=1)) == 1


def test_jobs_are_found_by_a_value_in_their_arguments(app: instar.App) -> None:
    @app.job(name="signup")
    def signup(user: dict[str, object], tries: int = 0, admin: bool = False) -> None: ...

    bob = signup.enqueue(user={"email": "bob@example.com", "age": 41}, tries=3, admin=True)
    amy = signup.enqueue(user={"email": "amy@example.com", "age": 7}, tries=30)
    odd = signup.enqueue(user={"email": "3"})

    def found(text: str) -> list[int]:
        return [job.id for job in app.jobs(args=text)]

    assert found("user.email:bob@example.com") == [bob.id]
    assert found("user.age:41") == [bob.id]
    assert found("tries:30") == [amy.id]
    assert found("admin:true") == [bob.id]
    assert found("user.email:3") == [odd.id]  # a string, and the number 3: both match
    assert found("user.email:nobody") == []
    assert found("user.missing:x") == []
    for bad in ("no colon", ":x", "user..email:x", 'user."x":y'):
        with pytest.raises(instar.InvalidOption, match="path:value"):
            app.jobs(args=bad)


def test_unknown_job_name_is_refused_and_nothing_is_written(app: instar.App) -> None:
    _register(app)
    with pytest.raises(instar.UnknownJob, match="no job named 'thumbnail'"):
        app.enqueue("thumbnail", {"path": "a.png"})
    assert app.jobs() == []


def test_arguments_that_are_not_json_are_refused(app: instar.App) -> None:
    resize = _register(app)
    with pytest.raises(instar.PayloadError, match="JSON"):
        resize.enqueue(path={1, 2})
    with pytest.raises(instar.PayloadError, match="JSON"):
        resize.enqueue(path=float("nan"))
    assert app.jobs() == []


def test_arguments_the_handler_cannot_take_are_refused(app: instar.App) -> None:
    resize = _register(app)
    with pytest.raises(instar.PayloadError, match="missing a required argument: 'path'"):
        resize.enqueue(width=3)
    with pytest.raises(instar.PayloadError, match="unexpected keyword"):
        resize.enqueue(path="a", colour="red")
    assert app.jobs() == []


def test_a_payload_over_the_limit_is_refused(database: str) -> None:
    with instar.App(database, max_payload_bytes=1000) as app:
        resize = _register(app)
        with pytest.raises(instar.PayloadError, match="over the limit of 1000"):
            resize.enqueue(path="x" * 2000)
        assert app.jobs() == []


def test_a_naive_run_at_is_refused(app: instar.App) -> None:
    resize = _register(app)
    with pytest.raises(instar.InvalidOption, match="no time zone"):
        resize.enqueue(path="a.png", run_at=datetime(2030, 1, 1))
    with pytest.raises(instar.InvalidOption, match="not both"):
        resize.enqueue(path="a.png", delay=1, run_at=datetime.now(UTC))
    with pytest.raises(instar.InvalidOption, match="negative"):
        resize.enqueue(path="a.png", delay=-1)
    assert app.jobs() == []


def test_an_unknown_id_is_a_named_error(app: instar.App) -> None:
    for call in (app.get, app.history, app.cancel, app.retry):
        with pytest.raises(instar.JobNotFound, match="no job with id 404"):
            call(404)


def test_an_unknown_state_filter_is_a_named_error(app: instar.App) -> None:
    with pytest.raises(instar.InvalidOption, match="unknown state 'done'"):
        app.jobs(state="done")


def test_a_database_that_cannot_be_opened_is_a_named_error(tmp_path: object) -> None:
    with pytest.raises(instar.ConfigurationError, match="does not exist"):
        instar.App("sqlite:////no/such/folder/jobs.db").jobs()
    with pytest.raises(instar.ConfigurationError, match="unsupported database URL"):
        instar.App("mysql://x/y").jobs()


def test_registering_two_handlers_under_one_name_is_refused(app: instar.App) -> None:
    _register(app)
    with pytest.raises(instar.ConfigurationError, match="registered already"):
        _register(app)


def test_cancel_of_a_ready_job_is_immediate(app: instar.App) -> None:
    resize = _register(app)
    job = resize.enqueue(path="a.png")
    cancelled = app.cancel(job.id)
    assert cancelled.state is instar.State.CANCELLED
    assert [e.to_state for e in app.history(job.id)] == [instar.State.READY, instar.State.CANCELLED]


def test_cancel_of_a_finished_job_is_refused_and_changes_nothing(app: instar.App) -> None:
    resize = _register(app)
    job = app.cancel(resize.enqueue(path="a.png").id)
    with pytest.raises(instar.InvalidTransition, match="is already cancelled") as refused:
        app.cancel(job.id)
    assert (refused.value.from_state, refused.value.to_state) == ("cancelled", "cancelled")
    assert app.get(job.id) == job
    assert len(app.history(job.id)) == 2


def test_retry_of_a_job_that_has_not_failed_is_refused(app: instar.App) -> None:
    resize = _register(app)
    job = resize.enqueue(path="a.png")
    with pytest.raises(instar.InvalidTransition, match="only a failed job"):
        app.retry(job.id)
    assert app.get(job.id) == job


def test_wait_times_out_on_a_job_that_does_not_finish(app: instar.App) -> None:
    resize = _register(app)
    job = resize.enqueue(path="a.png")
    with pytest.raises(TimeoutError, match="still ready"):
        app.wait(job.id, timeout=0.05)


def test_calling_a_definition_runs_the_handler_in_process(app: instar.App) -> None:
    @app.job
    def add(a: int, b: int) -> int:
        return a + b

    assert add(a=1, b=2) == 3
