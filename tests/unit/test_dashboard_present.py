"""What the dashboard's pages compute from records: masks, durations, time in
each state, wait and run times, and the lifecycle drawing's elements."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from instar.lifecycle import JOBS, State
from instar.models import Event
from instar.web.dashboard import present, svg

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(n: int, job: int, seconds: float, before: State | None, after: State) -> Event:
    trigger = "note" if before is after else "moved"
    return Event(
        n, job, T0 + timedelta(seconds=seconds), before, after, trigger, 1, None, None, None
    )


def test_values_under_secret_keys_are_masked_at_any_depth() -> None:
    value = {
        "user": {"email": "a@b.c", "Password": "x", "api_key": "y"},
        "items": [{"token": "z", "n": 1}],
        "note": "password in a value is kept",
    }
    assert present.masked(value) == {
        "user": {"email": "a@b.c", "Password": present.MASK, "api_key": present.MASK},
        "items": [{"token": present.MASK, "n": 1}],
        "note": "password in a value is kept",
    }


def test_keys_that_only_contain_pass_or_auth_inside_a_word_are_shown() -> None:
    shown = {"author": "ada", "passenger": "bob", "authority": 1}
    assert present.masked(shown) == shown
    hidden = {"pass": 1, "db_pwd": 2, "auth": 3, "x-auth-header": 4, "accessToken": 5}
    assert set(present.masked(hidden).values()) == {present.MASK}


def test_durations_read_as_people_write_them() -> None:
    assert [present.duration(s) for s in (None, 0.25, 12.44, 185, 7800, 2 * 86400 + 3600)] == [
        present.NONE,
        "250 ms",
        "12.4 s",
        "3 min 5 s",
        "2 h 10 min",
        "2 d 1 h",
    ]


def test_the_timeline_gives_each_move_the_time_until_the_next_and_the_last_until_now() -> None:
    events = [
        event(1, 7, 0, None, State.READY),
        event(2, 7, 2, State.READY, State.RUNNING),
        event(3, 7, 3, State.RUNNING, State.RUNNING),  # a note: no time of its own
        event(4, 7, 7, State.RUNNING, State.COMPLETED),
    ]
    lines = present.timeline(events, T0 + timedelta(seconds=10))
    assert [(line.stayed, line.is_move) for line in lines] == [
        (2.0, True),
        (5.0, True),
        (None, False),
        (3.0, True),
    ]


def test_wait_and_run_times_pair_each_jobs_moves_and_skip_what_began_before_the_sample() -> None:
    events = [
        event(1, 1, 0, State.RUNNING, State.COMPLETED),  # its start is not in the sample
        event(2, 2, 0, None, State.READY),
        event(3, 2, 1, State.READY, State.RUNNING),
        event(4, 2, 4, State.RUNNING, State.COMPLETED),
        event(5, 3, 0, None, State.READY),
        event(6, 3, 3, State.READY, State.RUNNING),
        event(7, 3, 4, State.RUNNING, State.FAILED),
    ]
    found = present.times(events, T0)
    assert (found.waits, found.runs) == (2, 2)
    assert (found.wait_p50, found.run_p50) == (2.0, 2.0)
    assert found.wait_p95 == pytest.approx(2.9)  # inclusive: 1 + 0.95 * (3 - 1)


def test_the_phase_shown_is_the_last_one_named_since_the_last_move() -> None:
    named = Event(3, 1, T0, State.RUNNING, State.RUNNING, "phase", 1, None, None, {"phase": "b"})
    moves = [event(1, 1, 0, None, State.READY), event(2, 1, 1, State.READY, State.RUNNING)]
    assert present.phase([*moves, named]) == "b"
    assert present.phase([*moves, named, event(4, 1, 2, State.RUNNING, State.COMPLETED)]) is None


def test_the_drawing_has_a_node_per_state_and_an_arrow_per_move_of_the_table() -> None:
    drawing = str(svg.lifecycle({State.READY: 1234}))
    nodes = set(re.findall(r'id="node-([a-z-]+)"', drawing))
    edges = set(re.findall(r'id="edge-([a-z]+(?:-off)?)-([a-z]+(?:-off)?)"', drawing))
    assert nodes == {s.value for s in State}
    assert edges == {(a.value, b.value) for a in State for b in JOBS.targets(a)}
    assert 'id="count-ready">1,234<' in drawing
