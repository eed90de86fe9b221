"""How long finished jobs are kept before maintenance prunes them.

A finished job (completed, failed, cancelled: the lifecycle table's final
states) is pruned, with its timeline, steps, awakeables and dependency edges,
once it has been in its state longer than its retention. The defaults keep
completed jobs 7 days and failed or cancelled ones 30 (failures are read
later, and more rarely, than successes). A job type's own retention wins over
its queue's, which wins over the default. A job is never pruned while another
job waits on it, while it has children, or before the state-flow rollup has
counted its events (so the finished counts stay right).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from instar.errors import InvalidOption
from instar.lifecycle import JOBS, State

DAY = 86400.0
MAX_RETENTION = 100 * 365 * DAY
"""A retention at most 100 years (any longer means 'keep')."""

Period = float | int | timedelta
"""Seconds, or a ``timedelta``."""


def _seconds(value: object, what: str) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOption(f"{what} must be seconds or a timedelta, got {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_RETENTION:
        raise InvalidOption(f"{what} must be 0 to {MAX_RETENTION:,.0f} seconds, got {value!r}")
    return seconds


def _by_state(periods: Mapping[str, Period], what: str) -> dict[State, float]:
    found: dict[State, float] = {}
    for state, period in periods.items():
        try:
            chosen = State(state)
        except ValueError:
            chosen = None
        if chosen not in JOBS.final:
            finals = ", ".join(sorted(s.value for s in JOBS.final))
            raise InvalidOption(f"{what}: {state!r} is not a finished state ({finals})")
        assert chosen is not None
        found[chosen] = _seconds(period, f"{what}[{state!r}]")
    return found


@dataclass(frozen=True)
class Retention:
    """Seconds (or timedeltas) each finished state is kept; ``by_queue`` and
    ``by_job`` map a queue or a job's full name to ``{state: period}`` for the
    states they keep otherwise. ``InvalidOption`` for a state that is not a
    finished one or a period that is negative, not finite or over 100 years."""

    completed: Period = 7 * DAY
    failed: Period = 30 * DAY
    cancelled: Period = 30 * DAY
    by_queue: Mapping[str, Mapping[str, Period]] = field(default_factory=dict)
    by_job: Mapping[str, Mapping[str, Period]] = field(default_factory=dict)
    _base: dict[State, float] = field(init=False, repr=False, compare=False)
    _queues: dict[str, dict[State, float]] = field(init=False, repr=False, compare=False)
    _jobs: dict[str, dict[State, float]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        base = {"completed": self.completed, "failed": self.failed, "cancelled": self.cancelled}
        object.__setattr__(self, "_base", _by_state(base, "Retention"))
        object.__setattr__(
            self, "_queues", {q: _by_state(p, f"by_queue[{q!r}]") for q, p in self.by_queue.items()}
        )
        object.__setattr__(
            self, "_jobs", {n: _by_state(p, f"by_job[{n!r}]") for n, p in self.by_job.items()}
        )

    def keep_for(self, name: str, queue: str, state: State) -> float | None:
        """Seconds a job of ``name`` on ``queue`` is kept in ``state``; None for a
        state that is not finished (never pruned)."""
        for overrides in (self._jobs.get(name), self._queues.get(queue)):
            if overrides and state in overrides:
                return overrides[state]
        found = self._base.get(state)
        return found

    @property
    def shortest(self) -> float:
        """The shortest retention of any state, queue or job type: no job
        created less than this long ago can be due."""
        periods = list(self._base.values())
        for overrides in (*self._queues.values(), *self._jobs.values()):
            periods += overrides.values()
        return min(periods)
