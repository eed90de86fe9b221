"""The pace a worker claims ahead by (``instar.worker.loop.Pace``): jobs ended
per second, on a clock the test moves."""

from __future__ import annotations

import pytest

from instar.worker.loop import Pace


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_jobs_that_start_but_have_not_ended_are_no_pace() -> None:
    clock = Clock()
    pace = Pace(enough=10, clock=clock)
    for _ in range(30):
        pace.started()  # 30 starts over 0.6 s: no run has ended yet
        clock.now += 0.02
    assert pace.per_second() == 0.0


def test_quick_handlers_give_a_pace_once_a_slots_worth_of_runs_ended() -> None:
    clock = Clock()
    pace = Pace(enough=10, clock=clock)
    for _ in range(10):
        pace.started()
    for _ in range(9):
        clock.now += 0.0005
        pace.ended()
    assert pace.per_second() == 0.0  # not a slots' worth yet
    clock.now += 0.0005
    pace.ended()  # 10 ended 5 ms after the first start: long before a quarter second
    assert pace.per_second() == pytest.approx(2_000.0)


def test_slow_handlers_give_at_most_the_pace_they_end_at() -> None:
    clock = Clock()
    pace = Pace(enough=10, clock=clock)
    for _ in range(10):
        pace.started()
    clock.now += 1.0
    for _ in range(10):
        pace.ended()  # ten 1-second runs end together
    # The quarter second had passed at the first end: the figure taken then counts
    # that one run (1/s, under the 10/s they end at: a worker claims too few ahead,
    # never too many); the other nine count in the next.
    assert pace.per_second() == pytest.approx(1.0)


def test_later_figures_are_averaged_over_a_quarter_second_with_the_last() -> None:
    clock = Clock()
    pace = Pace(enough=10, clock=clock)
    pace.started()
    clock.now += 0.01
    for _ in range(10):
        pace.ended()  # first figure: 1,000/s
    for _ in range(500):
        clock.now += 0.0005
        pace.ended()  # 2,000/s, for a quarter second
    assert pace.per_second() == pytest.approx(1_500.0)


def test_no_run_ended_for_a_window_is_no_pace() -> None:
    clock = Clock()
    pace = Pace(enough=1, clock=clock)
    pace.started()
    clock.now += 0.01
    pace.ended()
    assert pace.per_second() == pytest.approx(100.0)
    clock.now += Pace.WINDOW + 0.01
    assert pace.per_second() == 0.0


def test_a_first_fill_of_the_slots_that_ended_quickly_is_not_yet_a_pace() -> None:
    """A worker asks for two slots' worth (``Worker`` passes ``2 * concurrency``,
    at least 20): ten quick first runs, then slow ones, give no figure to claim
    ahead by."""
    clock = Clock()
    pace = Pace(enough=2 * 10, clock=clock)
    for _ in range(10):
        pace.started()
    for _ in range(10):
        clock.now += 0.0001
        pace.ended()  # the first fill ended within a millisecond
    assert pace.per_second() == 0.0


def test_a_burst_after_an_idle_spell_starts_its_pace_afresh() -> None:
    clock = Clock()
    pace = Pace(enough=20, clock=clock)
    pace.started()
    for _ in range(40):
        clock.now += 0.0005
        pace.ended()  # quick runs: 2,000/s
    assert pace.per_second() > 1_000
    clock.now += 60.0  # idle for a minute
    for _ in range(10):
        pace.started()  # slow runs now
    clock.now += 0.3
    assert pace.per_second() == 0.0  # the quick runs before the idle spell say nothing
    pace.ended()
    assert pace.per_second() == pytest.approx(1 / 0.3)
