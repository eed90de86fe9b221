"""What the pages show, computed from records: secrets masked, durations
written for people, the time a job spent in each state, wait and run times."""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from instar.lifecycle import State
from instar.models import Event
from instar.vocabulary import Trigger

MASK = "••••••"
NONE = "\N{EN DASH}"
"""What a page shows for a value that is not there."""
SECRET_KEY = re.compile(
    r"password|passwd|passphrase|secret|token|api[-_]?key|authorization|cookie|"
    r"credential|private[-_]?key|session|(^|[-_.])(pass|pwd|auth)([-_.]|$)",
    re.IGNORECASE,
)
"""Keys whose values the pages never show (the OWASP logging cheat sheet's list
of data to exclude, as key names): any key holding one of these words, and
``pass``, ``pwd`` or ``auth`` as a whole part of a key (so ``author`` and
``passenger`` stay shown)."""


def masked(value: Any) -> Any:
    """``value`` with the value of every key that names a secret replaced by ``MASK``."""
    if isinstance(value, dict):
        return {
            k: MASK if isinstance(k, str) and SECRET_KEY.search(k) else masked(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


def pretty(value: Any) -> str:
    """JSON for people: masked, indented, non-ASCII kept."""
    return json.dumps(masked(value), indent=2, ensure_ascii=False, default=str)


def duration(seconds: float | None) -> str:
    """``850 ms``, ``12.4 s``, ``3 min 5 s``, ``2 h 10 min``, ``3 d 4 h``."""
    if seconds is None:
        return NONE
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


@dataclass(frozen=True, slots=True)
class Line:
    """A timeline row: the event, and how long the job stayed in the state it
    entered (None for a note; up to now for the last move)."""

    event: Event
    stayed: float | None
    is_move: bool


def timeline(events: Sequence[Event], now: datetime) -> list[Line]:
    """Each event with the time spent in the state it entered (until the next move)."""
    moves = [i for i, e in enumerate(events) if e.from_state != e.to_state]
    stayed: dict[int, float] = {}
    for here, there in zip(moves, [*moves[1:], None], strict=True):
        end = now if there is None else events[there].at
        stayed[here] = (end - events[here].at).total_seconds()
    return [Line(e, stayed.get(i), i in stayed) for i, e in enumerate(events)]


def phase(events: Sequence[Event]) -> str | None:
    """The stage the job's handler last named (``ctx.phase``) in its current run."""
    for event in reversed(events):
        if event.from_state != event.to_state:
            return None  # a move since: that phase belongs to an earlier run
        if event.trigger == Trigger.PHASE and isinstance(event.detail, dict):
            named = event.detail.get("phase")
            return named if isinstance(named, str) else None
    return None


@dataclass(frozen=True, slots=True)
class Times:
    """Wait (ready to running) and run (running to the next state) times in
    seconds over a sample of recent moves: p50, p95 and how many."""

    wait_p50: float | None
    wait_p95: float | None
    run_p50: float | None
    run_p95: float | None
    waits: int
    runs: int


def _quantiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], values[0]
    cuts = statistics.quantiles(values, n=20, method="inclusive")
    return statistics.median(values), cuts[18]


def times(events: Iterable[Event], since: datetime) -> Times:
    """Wait and run times of the moves in ``events`` (any jobs, in id order)
    that ended after ``since``; a move whose start is not in ``events`` is left out."""
    entered: dict[int, tuple[State, datetime]] = {}
    waits: list[float] = []
    runs: list[float] = []
    for event in events:
        if event.from_state == event.to_state:
            continue
        before = entered.get(event.job_id)
        if before is not None and event.at >= since:
            spent = (event.at - before[1]).total_seconds()
            if before[0] is State.READY and event.to_state is State.RUNNING:
                waits.append(spent)
            elif before[0] is State.RUNNING:
                runs.append(spent)
        entered[event.job_id] = (event.to_state, event.at)
    wait50, wait95 = _quantiles(waits)
    run50, run95 = _quantiles(runs)
    return Times(wait50, wait95, run50, run95, len(waits), len(runs))
