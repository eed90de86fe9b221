"""Prometheus metrics at ``GET /api/v1/metrics`` (text exposition format), when
the ``metrics`` extra (prometheus_client) is installed.

Read when Prometheus scrapes, from the same sources as ``/stats/states``: live
states through their partial indexes, finished ones from the totals the
maintenance leader rolls up from the timeline; never a scan of every job, and
nothing counted in this process (several server processes give the same
answer). Like every read, it needs a token with the ``read`` scope
(Prometheus: ``authorization: {credentials: <token>}``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from instar.app import App
from instar.maintenance.state_flows import ROLLUP
from instar.web.auth import needs
from instar.web.state import PREFIX, web_state
from instar.web.tokens import Principal

router = APIRouter(prefix=PREFIX, tags=["metrics"])
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WORKERS_SEEN_WITHIN = 30.0
"""Seconds since a worker's last heartbeat for it to count as alive."""


class InstarCollector(Collector):
    """The metrics of one App's database, read at each scrape."""

    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        read = self.app.reader
        jobs = GaugeMetricFamily(
            "instar_jobs",
            "Jobs by queue and state (finished states as of the last rollup)",
            labels=["queue", "state"],
        )
        for queue, state, count in [*read.live_counts(), *read.finished_totals()]:
            jobs.add_metric([queue, state.value], count)
        yield jobs
        finished = CounterMetricFamily(
            "instar_jobs_finished",
            "Jobs that entered each finished state (as of the last rollup)",
            labels=["queue", "state"],
        )
        for queue, state, count in read.finished_entered():
            finished.add_metric([queue, state.value], count)
        yield finished
        now = self.app.clock.now()
        oldest = GaugeMetricFamily(
            "instar_queue_oldest_ready_age_seconds",
            "How long the oldest ready job of each queue has waited",
            labels=["queue"],
        )
        for queue, since in read.oldest_ready().items():
            oldest.add_metric([queue], max(0.0, now - since))
        yield oldest
        yield GaugeMetricFamily(
            "instar_workers_alive",
            f"Workers heard of in the last {WORKERS_SEEN_WITHIN:.0f} seconds",
            value=len(read.live_workers(WORKERS_SEEN_WITHIN)),
        )
        last = read.last_event_id()
        yield GaugeMetricFamily(
            "instar_rollup_lag_events",
            "Timeline events the rollup has not counted yet (a worker's maintenance counts them)",
            value=max(0, last - read.rollup_cursor(ROLLUP)),
        )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}}},
)
def metrics(request: Request, _: Annotated[Principal, Depends(needs("read"))]) -> Response:
    """The metrics in Prometheus's text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(InstarCollector(web_state(request).app))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)
