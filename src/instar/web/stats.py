"""Counts for dashboards, never from a scan of every job: live states through
their partial indexes; finished states and throughput from the per-minute flows
the maintenance leader rolls up from the timeline (``maintenance.state_flows``),
so they lag by at most a maintenance pass."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from instar.errors import InvalidOption
from instar.lifecycle import State
from instar.maintenance.state_flows import ROLLUP
from instar.registry.limits import parse_duration
from instar.web.auth import needs
from instar.web.problems import Problem
from instar.web.state import PREFIX, web_state
from instar.web.tokens import Principal

router = APIRouter(prefix=PREFIX, tags=["stats"])
MAX_WINDOW = 7 * 86400
MAX_BUCKETS = 2000


class StateCounts(BaseModel):
    """Jobs by queue and state (states with none left out), and by state over
    every queue. ``rolled_up_to``: the last event the finished counts include."""

    queues: dict[str, dict[State, int]]
    totals: dict[State, int]
    rolled_up_to: int


class Bucket(BaseModel):
    start: datetime
    entered: dict[State, int]
    exited: dict[State, int]


class Throughput(BaseModel):
    """Jobs that entered and left each finished state in each bucket
    (``entered.completed``: completions; ``exited.failed``: failed jobs retried),
    oldest bucket first."""

    window_seconds: int
    bucket_seconds: int
    queue: str | None
    buckets: list[Bucket]


def _seconds(text: str, what: str) -> int:
    try:
        return parse_duration(text, what)
    except InvalidOption as bad:
        raise Problem(400, "invalid_filter", str(bad)) from None


@router.get("/stats/states", response_model=StateCounts)
def states(request: Request, _: Annotated[Principal, Depends(needs("read"))]) -> StateCounts:
    read = web_state(request).app.reader
    rolled_up_to = read.rollup_cursor(ROLLUP)
    queues: dict[str, dict[State, int]] = defaultdict(dict)
    totals: dict[State, int] = defaultdict(int)
    for queue, state, count in [*read.live_counts(), *read.finished_totals()]:
        queues[queue][state] = count
        totals[state] += count
    return StateCounts(queues=dict(queues), totals=dict(totals), rolled_up_to=rolled_up_to)


@router.get("/stats/throughput", response_model=Throughput)
def throughput(
    request: Request,
    _: Annotated[Principal, Depends(needs("read"))],
    window: str = "1h",
    bucket: str = "1m",
    queue: str | None = None,
) -> Throughput:
    """``window`` up to 7d; ``bucket`` a whole number of minutes; at most 2,000
    buckets."""
    span, step = _seconds(window, "window"), _seconds(bucket, "bucket")
    if not 60 <= span <= MAX_WINDOW or step % 60 or step <= 0 or span // step > MAX_BUCKETS:
        raise Problem(
            400,
            "invalid_filter",
            f"window {window!r} and bucket {bucket!r}: the window is 1m to 7d, the bucket "
            f"whole minutes, and at most {MAX_BUCKETS:,} buckets",
        )
    now = time.time()
    first = (now - span) // step * step + step
    starts = [first + n * step for n in range(int((now - first) // step) + 1)]
    entered: dict[float, dict[State, int]] = {s: defaultdict(int) for s in starts}
    exited: dict[float, dict[State, int]] = {s: defaultdict(int) for s in starts}
    for flow in web_state(request).app.reader.flows_since(first):
        if queue is not None and flow.queue != queue:
            continue
        start = (flow.minute - first) // step * step + first
        if start in entered:
            entered[start][flow.state] += flow.entered
            exited[start][flow.state] += flow.exited
    return Throughput(
        window_seconds=span,
        bucket_seconds=step,
        queue=queue,
        buckets=[
            Bucket(
                start=datetime.fromtimestamp(s, UTC),
                entered=dict(entered[s]),
                exited=dict(exited[s]),
            )
            for s in starts
        ],
    )
