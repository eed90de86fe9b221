"""The read side: what callers may see of jobs, timelines and durable state.

Reads never go through a transaction; each returns what was committed when it
ran. Callers above the engine (the App, the CLI, the coming HTTP API) read
through here, never through the store.
"""

from __future__ import annotations

from collections.abc import Sequence

from instar.errors import AwakeableNotFound, JobNotFound
from instar.lifecycle import State
from instar.models import Awakeable, Event, FlowLimitInfo, Job, QueueStats
from instar.store.contract import (
    EventFilter,
    JobFilter,
    PruningMarks,
    RateHold,
    Scanned,
    StateFlow,
    Store,
    WorkerInfo,
)
from instar.vocabulary import AwakeableState, DependencyKind


class Reader:
    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, job_id: int) -> Job:
        """The job; ``JobNotFound`` if no job has this id (ids are whole numbers
        from 1 to 2**63 - 1 on both backends)."""
        if isinstance(job_id, bool) or not isinstance(job_id, int) or not 0 < job_id < 2**63:
            raise JobNotFound(job_id)
        job = self._store.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def jobs(self, where: JobFilter) -> list[Job]:
        """Jobs newest first."""
        return self._store.list_jobs(where)

    def history(self, job_id: int, after: int = 0, limit: int | None = None) -> list[Event]:
        """The job's timeline after the event ``after``, oldest first, at most
        ``limit`` events (None: all); ``JobNotFound`` for an unknown id."""
        self.get(job_id)
        return self._store.events(job_id, after, limit)

    def count_matching(self, queue: str | None, name: str | None, until: int) -> dict[State, int]:
        """Jobs up to the id ``until`` of a queue and a name, counted by state."""
        return self._store.count_matching(queue, name, until)

    def last_job_id(self) -> int:
        return self._store.last_job_id()

    def counts(self) -> dict[State, int]:
        return self._store.count_by_state()

    def queues(self) -> list[QueueStats]:
        return self._store.queue_stats()

    def flow_limits(self) -> list[FlowLimitInfo]:
        return self._store.flow_limits()

    def rate_hold(self, now: float, since: float) -> RateHold:
        return self._store.rate_hold(now, since)

    def awakeable(self, awakeable_id: str) -> Awakeable:
        """The awakeable; ``AwakeableNotFound`` if no awakeable has this id."""
        found = self._store.get_awakeable(awakeable_id)
        if found is None:
            raise AwakeableNotFound(awakeable_id)
        return found

    def awakeables(self, job_id: int) -> list[Awakeable]:
        return self._store.awakeables_of(self.get(job_id).id)

    def moves_at(self, job_ids: Sequence[int], at: float) -> list[Event]:
        """The moves of these jobs one transaction wrote at ``at`` (``Store.moves_at``)."""
        return self._store.moves_at(job_ids, at)

    def awakeables_in_state(
        self, state: AwakeableState, limit: int, queue: str | None = None
    ) -> list[Awakeable]:
        """Awakeables in ``state``, oldest first (the inbox of pending ones), of
        the jobs of ``queue`` when given."""
        return self._store.awakeables_in_state(state, limit, queue)

    def children(self, job_id: int) -> list[Job]:
        return self._store.children_of(self.get(job_id).id)

    def dependencies(self, job_id: int) -> list[Job]:
        """The jobs ``job_id`` was enqueued ``after``."""
        return self._store.dependencies_of(self.get(job_id).id, DependencyKind.AFTER)

    def steps(self, job_id: int) -> dict[str, str | None]:
        """A job's stored step results (JSON text), by step name."""
        return self._store.steps(job_id)

    def events_since(self, after_id: int, limit: int, where: EventFilter) -> list[Event]:
        """The feed's next page: see ``Store.events_since``."""
        return self._store.events_since(after_id, limit, where)

    def live_counts(self) -> list[tuple[str, State, int]]:
        """(queue, state, jobs) for the states jobs are not finished in."""
        return self._store.live_counts()

    def finished_totals(self) -> list[tuple[str, State, int]]:
        """(queue, state, jobs) for the finished states, as of the last rollup."""
        return self._store.finished_totals()

    def finished_entered(self) -> list[tuple[str, State, int]]:
        """(queue, state, jobs that ever entered it), as of the last rollup."""
        return self._store.finished_entered()

    def oldest_ready(self) -> dict[str, float]:
        """Since when (epoch seconds) each queue's oldest ready job has waited."""
        return self._store.oldest_ready()

    def flows_since(self, since: float) -> list[StateFlow]:
        return self._store.flows_since(since)

    def rollup_cursor(self, rollup: str) -> int:
        return self._store.rollup_cursor(rollup)

    def prune_scan(self, after_id: int, limit: int) -> list[Scanned]:
        return self._store.prune_scan(after_id, limit)

    def pruning_marks(self) -> PruningMarks:
        return self._store.pruning_marks()

    def last_event_id(self) -> int:
        return self._store.last_event_id()

    # -- what maintenance sweeps (each served by a partial index) -----------------

    def due_timers(self, now: float, limit: int) -> list[Job]:
        return self._store.due_timers(now, limit)

    def expired_pauses(self, now: float, limit: int) -> list[Job]:
        return self._store.expired_pauses(now, limit)

    def expired_leases(self, now: float, limit: int) -> list[Job]:
        return self._store.expired_leases(now, limit)

    def claimed_by(self, worker: str) -> list[Job]:
        """Jobs ``running`` under this worker's lease."""
        return self._store.claimed_by(worker)

    def stranded_waiters(self, limit: int) -> list[Job]:
        return self._store.stranded_waiters(limit)

    def unwakeable(self, limit: int) -> list[Job]:
        return self._store.unwakeable(limit)

    def next_timer_at(self) -> float | None:
        return self._store.next_timer_at()

    def live_workers(self, seen_within: float) -> list[WorkerInfo]:
        """Workers heard of in the last ``seen_within`` seconds (of the database's time)."""
        return self._store.live_workers(self._store.database_time() - seen_within)

    def change_marker(self) -> int:
        """A number that changes when another process commits: see ``Store.change_marker``."""
        return self._store.change_marker()
