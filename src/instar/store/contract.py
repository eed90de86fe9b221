"""The store contract: what the engine asks of a backend, and nothing more.

Every backend implements ``Store`` with its own SQL. A method that changes a
job's state names its precondition and compare-and-sets on it; losing a race
is a normal result (``False`` or an empty list), never an exception. Times are
epoch seconds (UTC) here; the models turn them into datetimes.

The records below are built once per job on the hot path, so they are plain
slotted dataclasses: a frozen one's ``__init__`` costs five times as much.
Treat them as read-only all the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from instar.lifecycle import State
from instar.models import Awakeable, Event, Job, QueueStats


@dataclass(slots=True)
class NewJob:
    name: str
    queue: str
    state: State
    priority: int
    max_attempts: int
    args: Mapping[str, Any]
    args_json: str
    key: str | None
    run_at: float | None
    lease_seconds: float
    pause_timeout: float = 86400.0
    after: tuple[int, ...] = ()
    parent_id: int | None = None


@dataclass(slots=True)
class Move:
    """One state change of one job, with the values it leaves behind.

    ``from_state`` plus one guard make the compare-and-set: ``version`` for
    operators and timers, ``guard_token`` for the worker holding the lease
    (so a zombie worker's report is refused). The other fields are the job's
    new values; the engine computes them, the store only writes them.
    """

    job_id: int
    from_state: State
    to_state: State
    trigger: str
    attempt: int
    run_at: float | None
    next_retry_at: float | None
    worker: str | None
    lease_token: str | None
    lease_expires_at: float | None
    result_json: str | None
    error_json: str | None
    max_attempts: int
    wake_at: float | None = None
    pause_deadline: float | None = None
    version: int | None = None
    guard_token: str | None = None
    actor: str | None = None
    detail_json: str | None = None


@dataclass(slots=True)
class Note:
    """A timeline entry that changes no state: progress, a cancel request, a refusal."""

    job_id: int
    trigger: str
    worker: str | None
    actor: str | None
    detail_json: str | None
    progress_json: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    worker: str
    limit: int
    queues: Sequence[str] | None


@dataclass(frozen=True, slots=True)
class BatchResult:
    applied: list[bool]
    claimed: list[Job]


@dataclass(frozen=True, slots=True)
class JobFilter:
    state: State | None = None
    queue: str | None = None
    name: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class Held:
    """What a heartbeat learns about one job its worker holds."""

    job_id: int
    state: State
    cancel_requested: bool
    pause_requested: bool


class Store(Protocol):
    """A durable home for jobs and their timelines."""

    supports_listen: bool

    def migrate(self) -> int:
        """Bring the schema up to date; returns the schema version."""
        ...

    def close(self) -> None: ...

    def insert_jobs(
        self, jobs: Sequence[NewJob], now: float, actor: str | None, connection: Any = None
    ) -> list[Job]:
        """Insert jobs and their first events in one transaction. A job whose
        ``key`` already exists is not inserted again: the existing one is returned.
        With ``connection`` (a driver connection of the caller's), the insert joins
        the caller's open transaction and commits or rolls back with it."""
        ...

    def watch(self, listener: Callable[[], None]) -> None:
        """Where ``supports_listen``: call ``listener`` whenever another process
        makes a job ready, so idle workers start it without polling."""
        ...

    def get_job(self, job_id: int) -> Job | None: ...

    def list_jobs(self, where: JobFilter) -> list[Job]: ...

    def count_by_state(self) -> dict[State, int]: ...

    def events(self, job_id: int) -> list[Event]: ...

    def commit_batch(
        self,
        moves: Sequence[Move],
        notes: Sequence[Note],
        claim: ClaimRequest | None,
        now: float,
    ) -> BatchResult:
        """In one transaction: apply each move if its guard still holds (with its
        event), append the notes, then claim up to ``claim.limit`` ready jobs
        (ready -> running, fresh lease token each, oldest most urgent first)."""
        ...

    def request_cancel_if_leased(self, job_id: int, now: float, actor: str | None) -> bool:
        """Flag a running (or serving) job for cancellation; its worker acts on it."""
        ...

    def heartbeat(self, worker: str, job_ids: Sequence[int], now: float) -> list[Held]:
        """Extend, in one statement, the leases ``worker`` holds on ``job_ids``
        (the jobs it is running or has claimed ahead: a claim it lost track of
        expires and is rescued); returns what each asks of its worker."""
        ...

    def request_pause_if_leased(self, job_id: int, now: float, actor: str | None) -> bool:
        """Flag a running job to pause at its next checkpoint."""
        ...

    # -- durable execution ---------------------------------------------------

    def steps(self, job_id: int) -> dict[str, str | None]:
        """Stored step results (JSON text) of a job, by step name."""
        ...

    def save_step(
        self,
        job_id: int,
        lease_token: str,
        name: str,
        result_json: str | None,
        now: float,
        worker: str | None = None,
    ) -> Held | None:
        """Store a step's result if the caller still holds the lease (else None)."""
        ...

    def save_checkpoint(
        self,
        job_id: int,
        lease_token: str,
        data_json: str,
        now: float,
        worker: str | None = None,
    ) -> Held | None:
        """Store a checkpoint if the caller still holds the lease (else None)."""
        ...

    def awakeable(self, job_id: int, name: str, new_id: str, now: float) -> Awakeable:
        """The job's awakeable of this name, created (with ``new_id``) if missing."""
        ...

    def get_awakeable(self, awakeable_id: str) -> Awakeable | None: ...

    def set_awakeable_timeout(self, awakeable_id: str, timeout_at: float) -> None: ...

    def settle_awakeable(
        self,
        awakeable_id: str,
        state: str,
        value_json: str | None,
        reason: str | None,
        wake: Move | None,
        now: float,
    ) -> bool:
        """pending -> ``state`` (compare-and-set), plus ``wake`` (suspended -> ready)
        when it still applies, in one transaction. False if already settled."""
        ...

    def awakeables_of(self, job_id: int) -> list[Awakeable]: ...

    def add_dependencies(self, job_id: int, on: Sequence[int], kind: str) -> None: ...

    def remove_dependencies(self, job_id: int, kind: str) -> None: ...

    def dependencies_of(self, job_id: int, kind: str) -> list[Job]:
        """The jobs ``job_id`` waits for, of one kind ('after' or 'join')."""
        ...

    def waiting_on(self, job_ids: Sequence[int]) -> list[Job]:
        """Pending or suspended jobs that wait for any of ``job_ids``."""
        ...

    def stranded_waiters(self, limit: int) -> list[Job]:
        """Pending or suspended-on-join jobs whose awaited jobs have all ended."""
        ...

    def children_of(self, job_id: int) -> list[Job]: ...

    def pause_queue(self, queue: str, now: float) -> bool: ...

    def resume_queue(self, queue: str) -> bool: ...

    def queue_stats(self) -> list[QueueStats]: ...

    def due_timers(self, now: float, limit: int) -> list[Job]:
        """Scheduled jobs whose run_at and backing-off jobs whose next_retry_at has come."""
        ...

    def expired_leases(self, now: float, limit: int) -> list[Job]: ...

    def next_timer_at(self) -> float | None:
        """The earliest run_at or next_retry_at still ahead, for burst workers and sleepers."""
        ...

    def try_lead(self, role: str, holder: str, now: float, ttl: float) -> bool:
        """Take or renew the leadership of ``role`` for ``ttl`` seconds."""
        ...

    def change_marker(self) -> int:
        """A number that changes when another connection commits (cheap to read)."""
        ...
