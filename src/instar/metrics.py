"""Prometheus metrics (the ``metrics`` extra: prometheus_client).

Two kinds, in one exposition:

- The database's, read when Prometheus scrapes (``InstarCollector``): jobs by
  queue and state (live states through their partial indexes, finished ones
  from the totals the maintenance leader rolls up from the timeline: never a
  scan of every job), the oldest ready job's age per queue, workers alive, and
  each declared limit's running and waiting jobs. Every process that serves
  them gives the same answer.
- A worker's own, counted as things happen in its process (``WorkerMetrics``),
  from what the worker knows already (``instar.worker.observer``), with no
  read of the database: the moves of its runs by the states they left and
  entered, its maintenance's moves by service (lease rescues among them), run
  durations, queue waits and retries by job name, and heartbeats.

``instar worker --metrics-port 9100`` serves both at ``/metrics``; the HTTP API
serves the database's at ``GET /api/v1/metrics``.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import Counter as Counter_
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from instar.app import App
from instar.clock import Clock
from instar.errors import ConfigurationError
from instar.lifecycle import CLAIM, Kind, State, states_of_kind
from instar.maintenance.runner import MaintenanceReport
from instar.maintenance.state_flows import ROLLUP
from instar.models import Job
from instar.store.contract import Move

log = logging.getLogger("instar.metrics")

WORKERS_SEEN_WITHIN = 30.0
"""Seconds since a worker's last heartbeat for it to count as alive."""
LEASED = frozenset(states_of_kind(Kind.LEASED))
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
"""Seconds: prometheus_client's default buckets (5 ms to 10 s), then up to an
hour, for background jobs that run for minutes."""


class InstarCollector(Collector):
    """The metrics of one App's database, read at each scrape."""

    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._collect()
        except Exception as exc:  # the database is away: the other metrics are still served
            log.warning("metrics: the database could not be read (%s)", exc)

    def _collect(self) -> Iterator[Metric]:
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
        running = GaugeMetricFamily(
            "instar_limit_running",
            "Jobs running under each declared limit (kind: queue or job)",
            labels=["kind", "name"],
        )
        waiting = GaugeMetricFamily(
            "instar_limit_waiting",
            "Jobs ready under each declared limit, waiting for room or a start",
            labels=["kind", "name"],
        )
        for limit in read.flow_limits():
            running.add_metric([limit.kind, limit.name], limit.running)
            waiting.add_metric([limit.kind, limit.name], limit.waiting)
        yield running
        yield waiting


class WorkerMetrics:
    """What one worker process does, counted as it happens (a ``RunObserver``):
    from what the worker knows already, once per batch where it has a batch,
    with each label's series looked up once. Counting through the transition
    listeners instead (a read of each transaction's moves) cost a busy SQLite
    worker 30 % of its jobs per second; this costs it none that shows."""

    def __init__(self, registry: CollectorRegistry, clock: Clock) -> None:
        self.clock = clock
        self._transitions = Counter(
            "instar_transitions",
            "Moves of this worker's runs (its claims, and how its runs ended), by the "
            "state left and the state entered",
            ["from_state", "to_state"],
            registry=registry,
        )
        self._maintenance = Counter(
            "instar_maintenance_moves",
            "Jobs this worker's maintenance moved, by service (lease_rescue: jobs whose "
            "worker was lost)",
            ["service"],
            registry=registry,
        )
        self._retries = Counter(
            "instar_retries",
            "Runs of this worker that failed and will run again, by job name",
            ["name"],
            registry=registry,
        )
        self._heartbeats = Counter(
            "instar_heartbeats", "Heartbeats this worker sent", registry=registry
        )
        self._run_seconds = _Histogram(
            "instar_job_run_seconds", "How long this worker's runs took, by job name"
        )
        self._queue_wait = _Histogram(
            "instar_job_queue_wait_seconds",
            "How long a job this worker claimed had waited: from its creation, or from "
            "its start or retry time when it had one, to its claim (a job back from a "
            "sleep or a pause is not counted)",
        )
        registry.register(self._run_seconds)
        registry.register(self._queue_wait)
        self.url = ""
        """Where they are served (``serve_worker_metrics``)."""
        self._runs: dict[int, tuple[str, float]] = {}  # job id: name, monotonic start
        self._children: dict[tuple[object, ...], Any] = {}  # (metric, *labels): series

    def _child(self, metric: Counter, *labels: str) -> Any:
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def claimed(self, jobs: Sequence[Job]) -> None:
        now = self.clock.now()
        observe = self._queue_wait.observe
        for job in jobs:
            if job.wake_at is not None or job.pause_deadline is not None:
                continue  # back from a sleep or a pause: when it became ready is not known
            # A retry comes after any start time, which comes after the creation.
            since = job.next_retry_at or job.run_at or job.created_at
            observe(job.name, now - since.timestamp())
        self._child(self._transitions, CLAIM[0].value, CLAIM[1].value).inc(len(jobs))

    def started(self, job: Job) -> None:
        self._runs[job.id] = (job.name, time.monotonic())

    def moved(self, moves: Sequence[Move]) -> None:
        now = time.monotonic()
        pairs: Counter_[tuple[State, State]] = Counter_()
        for move in moves:
            pairs[move.from_state, move.to_state] += 1
            if move.to_state in LEASED or move.from_state not in LEASED:
                continue  # not the end of a run
            run = self._runs.pop(move.job_id, None)
            if run is None:
                continue
            self._run_seconds.observe(run[0], now - run[1])
            if move.to_state is State.BACKING_OFF:
                self._child(self._retries, run[0]).inc()
        for (left, entered), count in pairs.items():
            self._child(self._transitions, left.value, entered.value).inc(count)

    def lost(self, job_ids: Sequence[int]) -> None:
        for job_id in job_ids:
            self._runs.pop(job_id, None)

    def maintained(self, report: MaintenanceReport) -> None:
        for service, count in report.moved.items():
            if count:
                self._child(self._maintenance, service).inc(count)

    def heartbeat(self) -> None:
        self._heartbeats.inc()


_BOUNDS = [repr(float(b)) for b in RUN_BUCKETS] + ["+Inf"]
"""The buckets' upper bounds as the text format writes them (``le``)."""


class _Histogram(Collector):
    """A histogram by job name, kept as plain bucket counts and exposed at each
    scrape. prometheus_client's own takes a lock and builds its labels on each
    observation: three times the cost, on every job. Observed from the
    worker's event loop only; a scrape copies the counts."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self._counts: dict[str, list[int]] = {}  # name: count per bucket, then +Inf
        self._sums: dict[str, float] = {}

    def observe(self, label: str, seconds: float) -> None:
        counts = self._counts.get(label)
        if counts is None:
            counts = self._counts[label] = [0] * (len(RUN_BUCKETS) + 1)
            self._sums[label] = 0.0
        seconds = max(0.0, seconds)
        counts[bisect.bisect_left(RUN_BUCKETS, seconds)] += 1
        self._sums[label] += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["name"])
        for label, counts in list(self._counts.items()):
            cumulative, total = [], 0
            for bound, count in zip(_BOUNDS, list(counts), strict=True):
                total += count
                cumulative.append((bound, total))
            family.add_metric([label], cumulative, self._sums.get(label, 0.0))
        yield family


def serve_worker_metrics(app: App, host: str, port: int) -> WorkerMetrics:
    """Serve the database's and a worker's metrics at ``http://host:port/metrics``
    (port 0: any free one) from a thread of this process; returns the worker's,
    to pass to the worker as its ``observer``, with their ``url``.
    ``ConfigurationError`` when the address cannot be bound."""
    registry = CollectorRegistry(auto_describe=False)
    metrics = WorkerMetrics(registry, app.clock)
    registry.register(InstarCollector(app))
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); "
            "choose another --metrics-port"
        ) from None
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address, in a URL
    metrics.url = f"http://{shown}:{server.server_port}/metrics"
    return metrics
