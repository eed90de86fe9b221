"""Every way of creating a job enforces the same limits on both backends, before
anything is written: ids, priorities, delays, start times, names, queues, keys,
and arguments checked against the handler's annotations."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

import instar
from instar.app import BoundJob
from instar.registry import JobDefinition, JobOptions, Placement, new_jobs
from instar.registry.limits import (
    MAX_DELAY,
    MAX_ID,
    MAX_KEY_BYTES,
    MAX_NAME_BYTES,
    MAX_PRIORITY,
    MIN_PRIORITY,
)


def _resize(app: instar.App) -> BoundJob:
    @app.job(name="resize", queue="images")
    def resize(ctx: instar.Context, path: str, width: int) -> dict[str, object]:
        return {"path": path, "width": width}

    return resize


def _nothing_written(app: instar.App) -> None:
    assert app.jobs() == []


# -- priorities ----------------------------------------------------------------------


@pytest.mark.parametrize("priority", [MIN_PRIORITY, -1, 0, 7, MAX_PRIORITY])
def test_a_priority_in_the_32_bit_range_is_stored_exactly(app: instar.App, priority: int) -> None:
    resize = _resize(app)
    job = resize.enqueue(path="a.png", width=1, priority=priority)
    assert app.get(job.id).priority == priority


@pytest.mark.parametrize(
    ("priority", "words"),
    [
        (MAX_PRIORITY + 1, "2,147,483,647"),
        (MIN_PRIORITY - 1, "-2,147,483,648"),
        (2**63, "32-bit"),
        (True, "got bool"),
        ("5", "whole number, got str"),
        (1.5, "whole number, got float"),
    ],
)
def test_a_priority_out_of_range_or_not_an_integer_is_refused_on_every_path(
    app: instar.App, priority: object, words: str
) -> None:
    resize = _resize(app)
    with pytest.raises(instar.InvalidOption, match=words):
        resize.enqueue(path="a.png", width=1, priority=priority)
    with pytest.raises(instar.InvalidOption, match=words):
        app.enqueue_many(resize, [{"path": "a.png", "width": 1}], priority=priority)  # type: ignore[arg-type]
    _nothing_written(app)


def test_a_definitions_priority_is_checked_when_it_is_registered(app: instar.App) -> None:
    with pytest.raises(instar.ConfigurationError, match="32-bit"):

        @app.job(priority=2**40)
        def loud() -> None: ...


# -- durations of a definition -------------------------------------------------------------


@pytest.mark.parametrize(
    "lease", [0, -1, math.inf, math.nan, True, "30", pytest.param(10**400, id="10**400")]
)
def test_a_lease_that_is_not_a_positive_finite_number_is_refused_when_registered(
    app: instar.App, lease: Any
) -> None:
    with pytest.raises(instar.ConfigurationError, match="lease must be a positive, finite"):

        @app.job(lease=lease)
        def work() -> None: ...


def test_jobs_whose_leases_were_given_as_an_int_and_a_float_enqueue_in_one_batch(
    app: instar.App,
) -> None:
    @app.job(name="whole", lease=5, pause_timeout=60)
    def whole() -> None: ...

    @app.job(name="fraction", lease=1.5, pause_timeout=0.5)
    def fraction() -> None: ...

    assert type(app.definition("whole").options.lease) is float
    jobs = app.enqueue_batch([(whole, {}, {}), (fraction, {}, {})])
    stored = [app.get(job.id) for job in jobs]
    assert [(j.name, j.lease_seconds, j.pause_timeout) for j in stored] == [
        ("whole", 5.0, 60.0),
        ("fraction", 1.5, 0.5),
    ]


# -- delays and start times ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("delay", "words"),
    [
        (float("inf"), "at most 315,360,000 seconds"),
        (float("nan"), "NaN"),
        (1e12, "at most 315,360,000 seconds"),
        (MAX_DELAY + 1, "3,650 days"),
        (-1, "must not be negative"),
        ("5", "number of seconds, got str"),
        (True, "number of seconds, got bool"),
        (Decimal("5"), "number of seconds, got Decimal"),
        (None, None),
    ],
)
def test_a_delay_must_be_a_finite_number_of_seconds_within_the_maximum(
    app: instar.App, delay: Any, words: str | None
) -> None:
    resize = _resize(app)
    if words is None:
        assert resize.enqueue(path="a.png", width=1, delay=delay).state is instar.State.READY
        return
    with pytest.raises(instar.InvalidOption, match=words):
        resize.enqueue(path="a.png", width=1, delay=delay)
    with pytest.raises(instar.InvalidOption, match=words):
        app.enqueue_many(resize, [{"path": "a.png", "width": 1}], delay=delay)
    _nothing_written(app)


@pytest.mark.parametrize("delay", [0, 0.5, 3, Fraction(1, 4), MAX_DELAY])
def test_any_real_delay_within_the_limits_is_accepted(app: instar.App, delay: Any) -> None:
    resize = _resize(app)
    job = resize.enqueue(path="a.png", width=1, delay=delay)
    expected = instar.State.READY if delay == 0 else instar.State.SCHEDULED
    assert job.state is expected
    if delay:
        assert job.run_at is not None
        ahead = (job.run_at - datetime.now(UTC)).total_seconds()
        assert abs(ahead - float(delay)) < 5


def test_a_run_at_further_ahead_than_the_maximum_is_refused(app: instar.App) -> None:
    resize = _resize(app)
    too_far = datetime.now(UTC) + timedelta(seconds=MAX_DELAY + 3600)
    with pytest.raises(instar.InvalidOption, match="3,650 days ahead"):
        resize.enqueue(path="a.png", width=1, run_at=too_far)
    with pytest.raises(instar.InvalidOption, match="3,650 days ahead"):
        resize.enqueue(path="a.png", width=1, run_at=datetime(9999, 12, 31, tzinfo=UTC))
    _nothing_written(app)


def test_a_run_at_long_past_starts_now(app: instar.App) -> None:
    resize = _resize(app)
    job = resize.enqueue(path="a.png", width=1, run_at=datetime(1, 1, 1, tzinfo=UTC))
    assert job.state is instar.State.READY


def test_a_start_time_outside_the_readable_years_is_refused_inside_new_jobs() -> None:
    definition = JobDefinition(lambda: None, "noop", JobOptions())
    for start in (float("inf"), float("nan"), -1.0, 1e12):
        with pytest.raises(instar.InvalidOption, match="start time"):
            new_jobs(definition, [{}], Placement(start=start), max_payload_bytes=1024)


# -- ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, MAX_ID + 1, 10**30])
def test_an_after_id_out_of_range_is_refused_before_any_read(app: instar.App, bad: int) -> None:
    resize = _resize(app)
    with pytest.raises(instar.InvalidOption, match="after"):
        resize.enqueue(path="a.png", width=1, after=[bad])
    _nothing_written(app)


def test_jobs_pages_newest_first_with_before(app: instar.App) -> None:
    resize = _resize(app)
    made = [
        job.id for job in app.enqueue_many(resize, [{"path": "a", "width": n} for n in range(7)])
    ]
    first = app.jobs(limit=3)
    assert [job.id for job in first] == made[::-1][:3]
    second = app.jobs(limit=3, before=first[-1].id)
    assert [job.id for job in second] == made[::-1][3:6]
    third = app.jobs(limit=3, before=second[-1].id)
    assert [job.id for job in third] == made[:1]
    assert app.jobs(limit=3, before=made[0]) == []


@pytest.mark.parametrize(("limit", "before"), [(0, None), (10_001, None), (5, 0), (5, 2**63)])
def test_a_listing_out_of_range_is_refused(app: instar.App, limit: int, before: int | None) -> None:
    with pytest.raises(instar.InvalidOption):
        app.jobs(limit=limit, before=before)


# -- names, queues, keys --------------------------------------------------------------------


BAD_TEXT = [
    pytest.param("caf\udce9", "not valid UTF-8 \\(byte 0xe9", id="lone-surrogate"),
    pytest.param("a\x00b", "NUL", id="nul"),
    pytest.param("", "must not be empty", id="empty"),
]


@pytest.mark.parametrize(("text", "words"), BAD_TEXT)
def test_a_queue_or_key_that_is_not_clean_utf8_is_refused(
    app: instar.App, text: str, words: str
) -> None:
    resize = _resize(app)
    with pytest.raises(instar.InvalidOption, match=f"queue .*{words}|queue {words}"):
        resize.enqueue(path="a.png", width=1, queue=text)
    with pytest.raises(instar.InvalidOption, match=f"key .*{words}|key {words}"):
        resize.enqueue(path="a.png", width=1, key=text)
    _nothing_written(app)


def test_a_queue_name_with_a_control_character_is_refused(app: instar.App) -> None:
    resize = _resize(app)
    with pytest.raises(instar.InvalidOption, match="control character '\\\\x1b'"):
        resize.enqueue(path="a.png", width=1, queue="images\x1b[31m")
    _nothing_written(app)


def test_names_queues_and_keys_at_their_limit_are_stored_exactly(app: instar.App) -> None:
    name = "é" * (MAX_NAME_BYTES // 2)  # two bytes each: exactly the limit
    queue = "ü" * (MAX_NAME_BYTES // 2)
    key = "k\tß" * (MAX_KEY_BYTES // 4)  # 4 bytes each; a tab is fine in a key

    @app.job(name=name)
    def named(n: int) -> int:
        return n

    job = named.enqueue(n=1, queue=queue, key=key)
    stored = app.get(job.id)
    assert (stored.name, stored.queue, stored.key) == (name, queue, key)


def test_names_queues_and_keys_over_their_limit_are_refused(app: instar.App) -> None:
    resize = _resize(app)
    with pytest.raises(instar.InvalidOption, match="202 bytes of UTF-8, over the limit of 200"):
        resize.enqueue(path="a.png", width=1, queue="é" * 101)
    with pytest.raises(instar.InvalidOption, match="over the limit of 1,000"):
        resize.enqueue(path="a.png", width=1, key="k" * 1001)
    with pytest.raises(instar.ConfigurationError, match="job name"):

        @app.job(name="x" * 201)
        def long_named() -> None: ...

    with pytest.raises(instar.ConfigurationError, match="job name"):

        @app.job(name="bad\x00name")
        def nul_named() -> None: ...

    _nothing_written(app)


def test_an_unknown_long_name_is_cut_in_the_error(app: instar.App) -> None:
    with pytest.raises(instar.UnknownJob) as refused:
        app.enqueue("n" * 100_000, {})
    assert len(str(refused.value)) < 300


# -- arguments against annotations ---------------------------------------------------------


def test_an_argument_that_does_not_fit_its_annotation_is_refused_naming_it(
    app: instar.App,
) -> None:
    resize = _resize(app)
    with pytest.raises(instar.PayloadError, match="width: Input should be a valid integer"):
        resize.enqueue(path="a.png", width="wide")
    with pytest.raises(instar.PayloadError, match="'wide'"):
        app.enqueue_many(resize, [{"path": "a", "width": 1}, {"path": "b", "width": "wide"}])
    _nothing_written(app)


def test_lax_values_pass_and_the_stored_arguments_are_left_as_given(app: instar.App) -> None:
    @app.job(name="report")
    def report(when: datetime, pages: tuple[int, ...], ratio: float, width: int) -> None: ...

    args = {"when": "2030-01-01T09:00:00Z", "pages": [1, 2], "ratio": 3, "width": "5"}
    job = report.enqueue(**args)
    assert app.get(job.id).args == args


def test_unannotated_any_and_unresolvable_annotations_are_not_checked(app: instar.App) -> None:
    @app.job(name="loose")
    def loose(a, b: Any, c: int = 0) -> None:  # type: ignore[no-untyped-def]
        ...

    class Local:
        pass

    @app.job(name="unresolvable")
    def unresolvable(x: Local, y: NoSuchName, z: int) -> None:  # type: ignore[name-defined]  # noqa: F821
        ...

    loose.enqueue(a={"any": "thing"}, b=[1, "two"])
    with pytest.raises(instar.PayloadError, match="c: Input should be a valid integer"):
        loose.enqueue(a=1, b=2, c="three")
    unresolvable.enqueue(x=1, y=2, z="not checked: the annotations cannot be resolved")


def test_a_nested_error_names_its_path_and_several_are_counted(app: instar.App) -> None:
    @app.job(name="batch")
    def batch(sizes: list[int], a: int, b: int, c: int) -> None: ...

    with pytest.raises(instar.PayloadError) as refused:
        batch.enqueue(sizes=[1, "x"], a="a", b="b", c="c")
    message = str(refused.value)
    assert "sizes[1]:" in message
    assert "and 1 more" in message


def test_a_child_spawned_with_bad_arguments_is_refused_like_any_enqueue() -> None:
    @instar.App().job(name="child")
    def child(n: int) -> int:
        return n

    with pytest.raises(instar.PayloadError, match="n: Input should be a valid integer"):
        new_jobs(child, [{"n": "x"}], Placement(parent_id=1), max_payload_bytes=1024)
    with pytest.raises(instar.InvalidOption, match="parent id"):
        new_jobs(child, [{"n": 1}], Placement(parent_id=0), max_payload_bytes=1024)
