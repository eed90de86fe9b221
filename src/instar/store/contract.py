"""The store contract: what the engine asks of a backend, and nothing more.

A store has two faces. Reads go straight to the ``Store``, role by role
(jobs, timeline, durable state, sweeps, leadership). Every write happens in a
``Transaction`` opened with ``store.transaction(now)``: everything done
through it commits together or not at all, so one logical change (a move,
its event, the bookkeeping it implies, the wake-ups it sets off) is one
transaction by construction.

A write that changes a job's state names its precondition and
compare-and-sets on it; losing a race is a normal result (``False``, an
empty list), never an exception. Times are epoch seconds (UTC); the models
turn them into datetimes.

The records below are built once per job on the hot path, so they are plain
slotted dataclasses: a frozen one's ``__init__`` costs five times as much.
Treat them as read-only all the same.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from instar.errors import InvalidOption
from instar.lifecycle import State
from instar.models import (
    ApiToken,
    Awakeable,
    BulkRecord,
    Event,
    FlowLimitInfo,
    Job,
    QueueStats,
    ScheduleRecord,
)
from instar.vocabulary import AwakeableState, DependencyKind

# -- records -----------------------------------------------------------------


@dataclass(slots=True)
class NewJob:
    name: str
    queue: str
    state: State
    priority: int
    max_attempts: int
    args: dict[str, Any]
    """The job's own copy of its arguments (the Job created from it keeps it)."""
    args_json: str
    key: str | None
    run_at: float | None
    lease_seconds: float
    pause_timeout: float = 86400.0
    after: tuple[int, ...] = ()
    parent_id: int | None = None
    limit_key: str | None = None
    """The key its concurrency limit counts by (``instar.registry.flow``), if it has one."""
    rate_key: str | None = None
    """The key its rate limit spaces starts by, if it has one."""
    trace_context: str | None = None
    """The trace context of the code that enqueued it (``instar.tracing``)."""

    def shared(self) -> tuple[Any, ...]:
        """Every column but the arguments: what jobs of one ``enqueue_many`` share."""
        return (
            self.name,
            self.queue,
            self.state,
            self.priority,
            self.max_attempts,
            self.key,
            self.run_at,
            self.lease_seconds,
            self.pause_timeout,
            self.parent_id,
            self.limit_key,
            self.rate_key,
            self.trace_context,
        )


def alike_but_args(jobs: Sequence[NewJob]) -> bool:
    """Whether several jobs without keys differ only in their arguments: a
    backend then inserts them in one statement that takes the shared columns
    once and the arguments as one JSON array."""
    if len(jobs) < 2 or jobs[0].key is not None:
        return False
    shared = jobs[0].shared()
    return all(job.shared() == shared for job in jobs)


@dataclass(slots=True)
class Move:
    """One state change of one job, with the values it leaves behind.

    ``from_state`` plus one guard make the compare-and-set: ``version`` for
    operators and timers, ``guard_token`` for the worker holding the lease
    (so a zombie worker's report is refused). The other fields are the job's
    new values; the engine computes them, the store only writes them.
    ``reporter`` is the worker that reported the move (named in its event), or
    None for a move an operator or maintenance made. The last three are
    bookkeeping the engine does in the same transaction when the move wins, not
    columns: ``awaiting`` and ``joining`` say what a
    move into suspended waits for (an awakeable's id, children's ids);
    ``timing_out`` names awakeables a timer's wake-up settles as timed out.
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
    rerun: bool = False
    clear_progress: bool = False
    version: int | None = None
    guard_token: str | None = None
    actor: str | None = None
    reporter: str | None = None
    detail_json: str | None = None
    awaiting: str | None = None
    joining: tuple[int, ...] = ()
    timing_out: tuple[str, ...] = ()


@dataclass(slots=True)
class Note:
    """A timeline entry that changes no state: progress, a phase, a refusal.
    ``progress_json`` also sets the job's progress; a note with ``in_timeline``
    false only does that (progress is kept on the job, in the timeline at a
    bounded rate)."""

    job_id: int
    trigger: str
    worker: str | None
    actor: str | None
    detail_json: str | None
    progress_json: str | None = None
    in_timeline: bool = True


@dataclass(frozen=True, slots=True)
class Applied:
    """What ``apply_moves`` did: for each move, whether it won; and which of the
    jobs that moved have something waiting on them (dependants, a joining
    parent, a durable machine's reply)."""

    won: list[bool]
    awaited: frozenset[int]


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """Claim up to ``limit`` ready jobs for ``worker``: from ``queues`` (None: any)
    and only of the job names in ``names`` (None: any), the handlers the worker
    has. A job no claimer has a handler for stays ready for one that has."""

    worker: str
    limit: int
    queues: Sequence[str] | None
    names: Sequence[str] | None = None
    limits: FlowLimits | None = None
    """The flow control the claim enforces (None: none)."""


@dataclass(frozen=True, slots=True)
class FlowLimits:
    """The limits a claim enforces, by job name and by queue: for each, the
    concurrency ``max`` (or None) and the seconds between starts (or None)."""

    jobs: Mapping[str, tuple[int | None, float | None]]
    queues: Mapping[str, tuple[int | None, float | None]]

    def as_json(self) -> tuple[str, str]:
        """(jobs, queues) as JSON objects of ``{"max": .., "interval": ..}``, for SQL."""

        def encoded(limits: Mapping[str, tuple[int | None, float | None]]) -> str:
            return json.dumps(
                {name: {"max": most, "interval": every} for name, (most, every) in limits.items()}
            )

        return encoded(self.jobs), encoded(self.queues)

    @property
    def fastest_interval(self) -> float | None:
        """The shortest time between two starts any rate here allows."""
        every = [i for _, i in (*self.jobs.values(), *self.queues.values()) if i is not None]
        return min(every) if every else None


SCAN_FACTOR = 4
"""Ready jobs a claim under flow control reads per job it may take: room to pass over
jobs of a key or queue that reached its limit within the same batch."""


@dataclass(frozen=True, slots=True)
class RateHold:
    """What the rates that hold ready jobs back say to an idle worker:
    ``next_start``, the earliest time after now (epoch seconds) one of them may
    start a job, or None; ``came_due``, whether one of them reopened between the
    ``since`` and the ``now`` asked about (a claim judged a moment before may have
    found it closed)."""

    next_start: float | None
    came_due: bool


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs to list, newest first: any of state, queue, name and parent,
    created after and before (epoch seconds, both exclusive); at most ``limit``;
    with ``before_id``, only older jobs (the next page)."""

    state: State | None = None
    queue: str | None = None
    name: str | None = None
    limit: int = 100
    before_id: int | None = None
    parent_id: int | None = None
    created_after: float | None = None
    created_before: float | None = None
    args: ArgsMatch | None = None


@dataclass(frozen=True, slots=True)
class ArgsMatch:
    """Jobs whose arguments hold ``value`` at ``path`` (keys from the top): a
    string equal to it, or a number, true, false or null written as it."""

    path: tuple[str, ...]
    value: str

    @classmethod
    def parse(cls, text: str) -> ArgsMatch:
        """``user.email:bob@example.com`` -> path ``("user", "email")``;
        ``InvalidOption`` without a colon, with an empty key or a double quote."""
        path, colon, value = text.partition(":")
        keys = tuple(path.strip().split("."))
        bad = any('"' in k or len(k) > 200 or not k.isprintable() for k in keys)
        if not colon or not all(keys) or bad:
            raise InvalidOption(
                f"an arguments search is path:value, such as user.email:bob@example.com "
                f"(printable keys without double quotes), not {text[:80]!r}"
            )
        return cls(keys, value.strip())

    def candidates(self) -> tuple[str, str | None]:
        """The value as JSON text: as a string, and as itself when it reads as
        a number, true, false or null."""
        as_string = json.dumps(self.value, ensure_ascii=False)
        try:
            literal = json.loads(self.value)
        except ValueError:
            return as_string, None
        if isinstance(literal, (dict, list, str)):
            return as_string, None
        return as_string, json.dumps(literal)

    def sqlite_path(self) -> str:
        return "$" + "".join(f'."{k}"' for k in self.path)


@dataclass(frozen=True, slots=True)
class StateFlow:
    """Jobs of ``queue`` that entered and left ``state`` in the minute starting at
    ``minute`` (epoch seconds)."""

    minute: float
    queue: str
    state: State
    entered: int
    exited: int


@dataclass(frozen=True, slots=True)
class Scanned:
    """A job as the pruning scan reads it: enough to decide whether it is due
    (epoch seconds) and to delete it only if it has not moved since."""

    id: int
    name: str
    queue: str
    state: State
    updated_at: float
    created_at: float
    version: int


@dataclass(frozen=True, slots=True)
class PruningMarks:
    """Where the pruning scan resumes (after this job id) and the largest event
    id pruned so far (0: none)."""

    cursor: int
    pruned_through: int


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a feed wants: of one job, of jobs on a queue or of a name,
    or moves into one state. Every field is optional."""

    job_id: int | None = None
    queue: str | None = None
    name: str | None = None
    state: State | None = None


@dataclass(frozen=True, slots=True)
class Renewal:
    """When a heartbeat renews a lease (to ``lease_seconds`` from now): once
    less than ``share`` of it (0 to 1), or less than ``margin`` seconds, is
    left. Other leases are not written."""

    share: float
    margin: float


@dataclass(frozen=True, slots=True)
class Held:
    """What a heartbeat (or a step, a checkpoint) learns about one job its worker holds."""

    job_id: int
    state: State
    cancel_requested: bool
    pause_requested: bool


@dataclass(frozen=True, slots=True)
class Recheck:
    """What a job claimed ahead (not started yet) must honour before it starts:
    a cancel or pause asked for since, or its queue paused since; ``held`` is
    False when its worker no longer holds it."""

    job_id: int
    held: bool
    cancel_requested: bool
    pause_requested: bool
    queue_paused: bool


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker as others see it: where it runs, what it can run, when last heard of."""

    id: str
    host: str
    pid: int
    concurrency: int
    queues: tuple[str, ...] | None
    handlers: tuple[str, ...]
    started_at: float = 0.0
    seen_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Lease:
    """Who writes on a leased job's behalf: only the holder of ``token`` may."""

    job_id: int
    token: str
    worker: str | None


@dataclass(frozen=True, slots=True)
class Settlement:
    """An awakeable's one settling: resolved with a value, rejected with a reason, timed out."""

    awakeable_id: str
    state: AwakeableState
    value_json: str | None = None
    reason: str | None = None


class Request(enum.Enum):
    """A flag an operator raises on a leased job; its worker acts on it."""

    CANCEL = "cancel"
    PAUSE = "pause"


@dataclass(frozen=True, slots=True)
class Term:
    """A bid to lead a role (maintenance) for ``ttl`` seconds."""

    role: str
    holder: str
    ttl: float


class Wake(enum.Enum):
    """What a committed transaction tells listeners: jobs became ready (workers
    want to know), or only that events were appended (feeds want to know)."""

    READY = "ready"
    EVENTS = "events"


# -- writes: one transaction ------------------------------------------------------


class JobWrites(Protocol):
    def insert_jobs(self, jobs: Sequence[NewJob], actor: str | None) -> list[Job]:
        """Insert jobs, their ``after`` edges and their first events. A job whose
        ``key`` already exists is not inserted again: the existing one is returned."""
        ...

    def apply_moves(self, moves: Sequence[Move]) -> Applied:
        """Apply each move whose guard still holds, with its event; a refused
        report from a stale lease leaves a ``refused`` note instead. Moves of
        one job apply in order, each seeing the one before."""
        ...

    def claim(self, request: ClaimRequest) -> list[Job]:
        """Claim up to ``request.limit`` ready jobs (ready -> running, a fresh lease
        token each, most urgent then oldest first), with their events."""
        ...

    def raise_request(
        self, job_id: int, request: Request, actor: str | None, detail_json: str | None = None
    ) -> bool:
        """Flag a leased job for cancellation (or a running one for a pause), with a
        note (its detail: ``detail_json``); False when the job is not in such a
        state or is flagged already."""
        ...

    def heartbeat(self, worker: str, job_ids: Sequence[int], renewal: Renewal) -> list[Held]:
        """Note that ``worker`` was seen, and return what each job of ``job_ids``
        it still holds asks of it; of those, renew the leases that ``renewal``
        says are due. As many statements however many jobs (one on PostgreSQL,
        two on SQLite)."""
        ...

    def recheck(self, worker: str, job_ids: Sequence[int]) -> list[Recheck]:
        """Jobs ``worker`` claimed ahead that must not start as they are: asked to
        cancel or pause, their queue paused, or no longer held (usually none)."""
        ...

    def register_worker(self, worker: WorkerInfo) -> None:
        """Say that ``worker`` runs (or runs still), with what it can run."""
        ...

    def unregister_worker(self, worker_id: str) -> None: ...

    def forget_workers(self, unseen_since: float) -> int:
        """Drop workers not heard of since ``unseen_since``; how many."""
        ...

    def lock_job(self, job_id: int) -> Job | None:
        """The job, locked against other writers until this transaction ends."""
        ...

    def waiting_on(self, job_ids: Sequence[int]) -> list[Job]:
        """Pending or suspended jobs that wait for any of ``job_ids``."""
        ...

    def awaited(self, job_id: int, kind: DependencyKind, *, share_lock: bool = False) -> list[Job]:
        """The jobs ``job_id`` waits for, of one kind. With ``share_lock`` they are
        locked against a concurrent end, so that a job ending now either commits
        first (and is seen ended here) or waits, and then sees this waiter."""
        ...

    def pause_queue(self, queue: str) -> bool: ...

    def resume_queue(self, queue: str) -> bool: ...


class TimelineWrites(Protocol):
    def append_notes(self, notes: Sequence[Note]) -> None:
        """Append notes (and set progress where a note carries it)."""
        ...


class DurableWrites(Protocol):
    def save_step(self, lease: Lease, name: str, result_json: str | None) -> Held | None:
        """Store a step's result if the lease still holds (else None), with a note."""
        ...

    def save_checkpoint(self, lease: Lease, data_json: str) -> Held | None:
        """Store a checkpoint if the lease still holds (else None), with a note."""
        ...

    def awakeable(self, job_id: int, name: str, new_id: str) -> Awakeable:
        """The job's awakeable of this name, created (with ``new_id``) if missing."""
        ...

    def get_awakeable(self, awakeable_id: str) -> Awakeable | None: ...

    def set_awakeable_timeout(self, awakeable_id: str, timeout_at: float) -> None: ...

    def settle_awakeable(self, settlement: Settlement) -> bool:
        """pending -> the settlement's state (compare-and-set); False if settled already."""
        ...

    def add_dependencies(self, job_id: int, on: Sequence[int], kind: DependencyKind) -> None: ...

    def remove_dependencies(self, job_ids: Sequence[int], kind: DependencyKind) -> None: ...


@dataclass(slots=True)
class InstanceRow:
    """One durable machine instance as stored (``instar.machines``)."""

    machine: str
    key: str
    version: int
    state: str
    context_json: str
    seq: int
    final: bool
    created_at: float
    updated_at: float


@dataclass(slots=True)
class HistoryRow:
    """One entry of an instance's history: what happened (``kind``: created,
    event, timer, rolled_back, migrated), the state and context it left, and
    which transition (its index in the definition) made it."""

    machine: str
    key: str
    seq: int
    at: float
    kind: str
    event: str | None
    from_state: str | None
    to_state: str
    data_json: str | None
    context_json: str
    actor: str | None
    transition: int | None
    version: int
    detail_json: str | None


@dataclass(slots=True)
class TimerRow:
    """An armed ``after`` timer of an instance's state; ``seq``: the history
    entry that armed it."""

    id: int | None
    machine: str
    key: str
    state: str
    event: str
    due_at: float
    seq: int


@dataclass(slots=True)
class RefusalRow:
    id: int | None
    machine: str
    key: str
    at: float
    event: str
    state: str | None
    reason: str
    detail: str | None
    actor: str | None


@dataclass(slots=True)
class Reply:
    """A job an action enqueued, whose result becomes ``event`` of an instance."""

    job_id: int
    machine: str
    key: str
    event: str


@dataclass(slots=True)
class Advance:
    """One accepted change of an instance: the row it leaves (``moved``), the
    seq it must be at now, its history entry, the states whose timers go
    (``cancel``; None: every timer) and the timers armed."""

    moved: InstanceRow
    expect_seq: int
    entry: HistoryRow
    cancel: Sequence[str] | None
    arm: Sequence[TimerRow]


class MachineWrites(Protocol):
    """The durable machines' writes, in the transaction of whatever caused them."""

    def save_definition(self, name: str, version: int, body: str, digest: str) -> str | None:
        """Keep a definition; None if it was new, else the digest already kept."""
        ...

    def definition_body(self, name: str, version: int | None) -> tuple[int, str] | None:
        """(version, raw JSON) of ``name`` at ``version`` (None: the latest)."""
        ...

    def lock_instance(self, machine: str, key: str) -> InstanceRow | None:
        """The instance, locked until the transaction ends (PostgreSQL)."""
        ...

    def insert_instance(self, row: InstanceRow) -> bool:
        """False (nothing written) when the key exists already."""
        ...

    def update_instance(self, row: InstanceRow, expect_seq: int) -> bool:
        """Compare-and-set on ``expect_seq``."""
        ...

    def append_history(self, rows: Sequence[HistoryRow]) -> None: ...

    def advance_instance(self, advance: Advance) -> bool:
        """Write one accepted change: the instance compare-and-set on
        ``advance.expect_seq``, its history entry, its timers; False (nothing
        written) when the instance is no longer at that seq. PostgreSQL: one
        statement."""
        ...

    def history_entry(self, machine: str, key: str, seq: int) -> HistoryRow | None: ...

    def arm_timers(self, timers: Sequence[TimerRow]) -> None: ...

    def cancel_timers(self, machine: str, key: str, states: Sequence[str] | None) -> None:
        """The instance's timers of ``states`` (None: every one) are dropped."""
        ...

    def take_timer(self, timer_id: int) -> bool:
        """Delete a timer that is due; False when it is gone (fired or cancelled)."""
        ...

    def add_refusal(self, row: RefusalRow, keep: int) -> None:
        """Log a refused event; the instance keeps its last ``keep`` refusals."""
        ...

    def send_outcome(self, machine: str, key: str, idempotency_key: str) -> str | None: ...

    def save_send_outcome(
        self, machine: str, key: str, idempotency_key: str, outcome_json: str
    ) -> None: ...

    def add_replies(self, replies: Sequence[Reply]) -> None: ...

    def take_replies(self, job_ids: Sequence[int]) -> list[Reply]:
        """The replies of these jobs, deleted: each is delivered once."""
        ...

    def save_retention(
        self, machine: str, keep_last: int | None, keep_days: float | None
    ) -> None: ...

    def prune_history(
        self, machine: str, keep_last: int | None, before: float | None, limit: int
    ) -> int:
        """Delete up to ``limit`` entries outside the kept bounds (never an
        instance's last one); how many went."""
        ...


class MachineReads(Protocol):
    def machine_definitions(self) -> list[tuple[str, int, str, float]]:
        """(name, version, digest, created_at) of every definition kept."""
        ...

    def definition_body(self, name: str, version: int | None) -> tuple[int, str] | None: ...

    def get_instance(self, machine: str, key: str) -> InstanceRow | None: ...

    def list_instances(
        self, machine: str, state: str | None, after: str | None, limit: int
    ) -> list[InstanceRow]:
        """Instances by key; ``state`` a leaf or superstate path (its whole subtree)."""
        ...

    def count_instances(self, machine: str) -> dict[str, int]:
        """Instances per leaf state."""
        ...

    def history(
        self, machine: str, key: str, since_seq: int = 0, last: int | None = None
    ) -> list[HistoryRow]:
        """Entries after ``since_seq``, oldest first; with ``last`` only that many
        of the newest."""
        ...

    def refusals(self, machine: str, key: str, limit: int) -> list[RefusalRow]:
        """The latest refusals, newest first."""
        ...

    def timers_of(self, machine: str, key: str) -> list[TimerRow]: ...

    def due_machine_timers(self, now: float, limit: int) -> list[TimerRow]:
        """Timers due at ``now``, earliest first."""
        ...

    def next_machine_timer_at(self) -> float | None: ...

    def machine_retentions(self) -> list[tuple[str, int | None, float | None]]: ...


class Transaction(JobWrites, TimelineWrites, DurableWrites, MachineWrites, Protocol):
    """Every write of one logical change; commits when its ``with`` block ends."""

    now: float

    def wakes(self) -> set[Wake]:
        """What this transaction will tell listeners once it commits."""
        ...

    observed: bool
    """Set by the engine when someone listens to its moves: only then does the
    transaction keep the ids of the jobs it moved (``moved``), so that the hot
    path (claims, completions) does that work only when it is wanted."""

    def moved(self) -> set[int]:
        """The jobs this transaction moved (created ones included), when
        ``observed``: their moves' events are written at its ``now``."""
        ...

    after_commit: list[Callable[[], None]]
    """Calls to make once the transaction has committed (a durable machine's
    listeners); never made when it rolls back."""


# -- reads, role by role ----------------------------------------------------------


class JobReads(Protocol):
    def get_job(self, job_id: int) -> Job | None: ...

    def list_jobs(self, where: JobFilter) -> list[Job]: ...

    def count_by_state(self) -> dict[State, int]: ...

    def count_matching(self, queue: str | None, name: str | None, until: int) -> dict[State, int]:
        """Jobs with ids up to ``until`` of a queue and a name (each optional; a
        name matches as in ``list_jobs``), counted by state."""
        ...

    def last_job_id(self) -> int:
        """The largest job id (0 when there is no job)."""
        ...

    def queue_stats(self) -> list[QueueStats]: ...

    def children_of(self, job_id: int) -> list[Job]: ...

    def dependencies_of(self, job_id: int, kind: DependencyKind) -> list[Job]:
        """The jobs ``job_id`` waits for, of one kind."""
        ...


class TimelineReads(Protocol):
    def moves_at(self, job_ids: Sequence[int], at: float) -> list[Event]:
        """The moves (entries included, notes not) of these jobs written at the
        epoch second ``at``, in id order: what one transaction that moved them
        wrote (two transactions never move one job at the same instant)."""
        ...

    def events(self, job_id: int, after: int = 0, limit: int | None = None) -> list[Event]:
        """One job's timeline after the event ``after``, oldest first, at most
        ``limit`` events (None: all). A job's events are written under its row
        lock, so their id order is their commit order: no feed horizon needed
        (an open transaction elsewhere never holds a job's own timeline back)."""
        ...

    def events_since(self, after_id: int, limit: int, where: EventFilter) -> list[Event]:
        """Up to ``limit`` events that follow the event ``after_id`` (0: the first)
        in commit order, matching ``where``. Reading again from the last id
        returned never misses nor repeats an event, however transactions
        interleave: an event is returned only once no transaction that began
        before it can still commit an earlier one."""
        ...

    def last_event_id(self) -> int:
        """The id of the latest event ``events_since`` would return (0 if none)."""
        ...

    def held_back_events(self) -> bool:
        """Whether committed events exist that ``events_since`` does not return
        yet, because an older transaction is still open (never on SQLite)."""
        ...


class DurableReads(Protocol):
    def steps(self, job_id: int) -> dict[str, str | None]:
        """Stored step results (JSON text) of a job, by step name."""
        ...

    def get_awakeable(self, awakeable_id: str) -> Awakeable | None: ...

    def awakeables_of(self, job_id: int) -> list[Awakeable]: ...

    def awakeables_in_state(
        self, state: AwakeableState, limit: int, queue: str | None = None
    ) -> list[Awakeable]:
        """Awakeables in ``state``, oldest first, at most ``limit`` (the inbox);
        of the jobs of ``queue`` only, when given."""
        ...


class SweepReads(Protocol):
    """What maintenance looks for; each read is served by a partial index."""

    def due_timers(self, now: float, limit: int) -> list[Job]:
        """Scheduled, backing-off and suspended jobs whose time has come."""
        ...

    def expired_pauses(self, now: float, limit: int) -> list[Job]:
        """Paused jobs past their ``pause_deadline``."""
        ...

    def expired_leases(self, now: float, limit: int) -> list[Job]: ...

    def claimed_by(self, worker: str) -> list[Job]:
        """Jobs ``running`` under this worker's lease (at most a few batches' worth)."""
        ...

    def next_timer_at(self) -> float | None:
        """The earliest run_at, next_retry_at or wake_at still ahead."""
        ...

    def stranded_waiters(self, limit: int) -> list[Job]:
        """Pending or suspended jobs whose awaited jobs have all ended."""
        ...

    def unwakeable(self, limit: int) -> list[Job]:
        """Suspended jobs with nothing left to wake them: no timer, no pending
        awakeable, no unfinished child."""
        ...


class Leadership(Protocol):
    def try_lead(self, term: Term, now: float) -> bool:
        """Take or renew the leadership of ``term.role`` for ``term.ttl`` seconds."""
        ...

    def resign(self, term: Term) -> None:
        """Give up the leadership of ``term.role`` if ``term.holder`` holds it, so that
        another process takes it at once instead of when its term runs out."""
        ...


class WorkerReads(Protocol):
    def live_workers(self, seen_since: float) -> list[WorkerInfo]:
        """Workers heard of (a heartbeat, a start) since ``seen_since``."""
        ...


class FlowControl(Protocol):
    def declare_flow_limits(
        self, limits: Sequence[FlowLimitInfo], names: Sequence[str], now: float
    ) -> None:
        """Record the limits a worker runs with, replacing what was recorded for
        these queues and these job ``names`` (a job name no longer limited loses
        its row)."""
        ...

    def flow_limits(self) -> list[FlowLimitInfo]:
        """Every declared limit, with how many of its jobs run and wait."""
        ...

    def rate_hold(self, now: float, since: float) -> RateHold:
        """The rates that hold ready jobs back, as of ``now`` (epoch seconds):
        the earliest next start after ``now``, and whether one reopened after
        ``since`` (a rate with no ready job waiting counts for neither)."""
        ...

    def forget_rates(self, before: float, limit: int) -> int:
        """Delete at most ``limit`` rate rows whose next start is before
        ``before`` (they say nothing more than no row); how many went."""
        ...


class Store(
    MachineReads,
    JobReads,
    TimelineReads,
    DurableReads,
    SweepReads,
    WorkerReads,
    Leadership,
    FlowControl,
    Protocol,
):
    """A durable home for jobs and their timelines."""

    supports_listen: bool
    local_reads: bool
    """Whether a read is a local file access (SQLite: microseconds, no network)
    rather than a round trip to a server (PostgreSQL). Where it is, an event loop
    may read inline: handing a point read to a thread and back costs more than
    the read itself."""
    concurrent_writers: bool
    """Whether write transactions on different connections run side by side
    (PostgreSQL) or one at a time (SQLite: one writer per database)."""

    def migrate(self) -> int:
        """Bring the schema up to date; returns the schema version."""
        ...

    def check(self) -> list[str]:
        """Problems with the database's own files (SQLite: a damaged page); [] if none."""
        ...

    def schema_version(self) -> tuple[int, int]:
        """(the version the database has, 0 if none; the version this code wants)."""
        ...

    def close(self) -> None: ...

    def transaction(
        self, now: float, connection: Any = None, *, pipeline: bool = False
    ) -> AbstractContextManager[Transaction]:
        """One write transaction at time ``now``. With ``connection`` (a driver
        connection of the caller's, PostgreSQL only) it joins the caller's
        open transaction and commits or rolls back with it. ``pipeline``: send
        statements whose results are not read without waiting for each (the
        worker's batches; PostgreSQL's pipeline mode, nothing on SQLite)."""
        ...

    def advance_one(self, advance: Advance, now: float) -> bool:
        """``Transaction.advance_instance`` as one atomic write on its own
        (PostgreSQL: one statement in autocommit, one round trip): the durable
        machines' send when this process knows the instance's seq already."""
        ...

    def claim_alone(
        self, claim: ClaimRequest, recheck: Sequence[int], now: float
    ) -> tuple[list[Job], list[Recheck]]:
        """``Transaction.recheck`` of ``recheck`` and ``Transaction.claim``, with
        nothing else to write (a worker's claim while its reports go elsewhere,
        or while it has none): (the claimed jobs in claim order, the rechecks).
        PostgreSQL, without limits: the claim, its events and the wake-up as one
        statement in autocommit, sent with the recheck: one round trip."""
        ...

    def apply_alone(self, moves: Sequence[Move], now: float) -> list[bool]:
        """Apply ``moves`` with nothing else to write, where the backend can do it
        without a transaction of the caller's: a move is applied, with its event
        and the wake-up, when it wins its compare-and-set and nothing waits on
        its job (a dependant, a machine's reply). Which were applied, in order;
        the caller applies the rest in a transaction (a stale report is refused
        there, with its note; a job others wait on sets them off there). The
        caller passes only moves that set off nothing by themselves
        (``engine.waiting.sets_off_nothing``), of distinct jobs. A backend may
        leave every move to the caller. PostgreSQL: one statement in
        autocommit, one round trip; its wake-up says jobs became ready when any
        of the moves goes to ready, applied or not (a wake-up too many costs a
        claim that finds nothing)."""
        ...

    def enqueue_one(self, job: NewJob, actor: str | None, now: float) -> Job | None:
        """Insert one job that waits for no other (ready or scheduled), its first
        event and the wake-up, as one atomic write (PostgreSQL: one statement, one
        round trip); None when its key exists already (nothing is written)."""
        ...

    def watch(self, listener: Callable[[Wake], None]) -> None:
        """Where ``supports_listen``: call ``listener`` whenever another process
        commits events (``Wake.READY`` when jobs became ready). Listening starts
        with the first call, which returns once it is in place."""
        ...

    def change_marker(self) -> int:
        """A number that changes when another process commits (cheap to read)."""
        ...

    def database_time(self) -> float:
        """The database's clock, epoch seconds: the one clock leases and timers are
        judged by (SQLite: this machine's)."""
        ...

    # -- state counts and flows ------------------------------------------------------

    def live_counts(self) -> list[tuple[str, State, int]]:
        """(queue, state, jobs) for every state a job is not finished in, each
        counted through its partial index (never a scan of every job)."""
        ...

    def finished_totals(self) -> list[tuple[str, State, int]]:
        """(queue, state, jobs) for the finished states, from the totals the
        rollup keeps (as of its last pass)."""
        ...

    def finished_entered(self) -> list[tuple[str, State, int]]:
        """(queue, state, jobs that ever entered it) for the finished states, as
        of the rollup's last pass: counters that only grow (pruning included)."""
        ...

    def oldest_ready(self) -> dict[str, float]:
        """Each queue with a ready job: since when (epoch seconds) its oldest
        ready job has waited; read through the ready jobs only."""
        ...

    def flows_since(self, since: float) -> list[StateFlow]:
        """The rolled-up flows of every minute from ``since`` (epoch seconds)."""
        ...

    def prune_scan(self, after_id: int, limit: int) -> list[Scanned]:
        """Up to ``limit`` jobs with ids above ``after_id``, in id order."""
        ...

    def pruning_marks(self) -> PruningMarks: ...

    def prune(
        self,
        due: Sequence[tuple[int, int]],
        cursor: int | None,
        rolled_up_to: int,
        *,
        dry_run: bool = False,
    ) -> list[tuple[str, State]]:
        """In one transaction: delete the jobs given as ``(id, version)`` that
        have not moved since, are finished, have no job waiting on them and no
        children, and whose events are all at or below ``rolled_up_to``; their
        timelines, steps, awakeables and edges with them. Counts them as pruned
        in the state totals, moves the scan's cursor to ``cursor`` (None: leaves
        it) and the pruned-through mark up. Returns each pruned job's (queue,
        state); with ``dry_run``, the same answer and the transaction rolled
        back."""
        ...

    def rollup_cursor(self, name: str) -> int:
        """The last event id the rollup ``name`` counted (0: none yet)."""
        ...

    def roll_up(self, name: str, limit: int) -> int:
        """Count the next ``limit`` events of the feed after the rollup's cursor
        into the minutes and the totals, and move the cursor past them, in one
        transaction that holds the cursor (a second leader waits, then counts
        what follows); returns how many events it counted."""
        ...

    # -- the HTTP API's tokens and keys --------------------------------------------

    def add_token(self, token: ApiToken) -> bool:
        """Store a token; False (nothing written) when its name was ever taken."""
        ...

    def token_by_digest(self, digest: str) -> ApiToken | None:
        """The token that is not revoked with this digest, if any."""
        ...

    def tokens(self) -> list[ApiToken]:
        """Every token, revoked ones too, oldest first."""
        ...

    def revoke_token(self, name: str, now: float) -> bool:
        """Revoke the live token of this name; False if there is none."""
        ...

    def key(self, name: str, make: Callable[[], str]) -> str:
        """The key of this name, made with ``make`` and stored the first time it
        is asked for (every process on the database gets the same one)."""
        ...

    # -- periodic jobs -------------------------------------------------------------

    def schedules(self) -> list[ScheduleRecord]:
        """Every stored schedule, by name."""
        ...

    def schedule_seen(
        self, name: str, expression: str, tz: str, first_slot: float, now: float
    ) -> ScheduleRecord:
        """Record that code has this schedule now: a new one starts after
        ``first_slot``; a known one keeps its progress and pause, and takes the
        expression and zone given."""
        ...

    def advance_schedule(self, name: str, last_slot: float, last_job_id: int | None) -> None:
        """Mark the slots up to ``last_slot`` handled (never backwards), and the
        last job made when one was (None: leaves it)."""
        ...

    def pause_schedule(self, name: str, paused: bool) -> bool:
        """Pause or resume a stored schedule; False when it was so already (or
        is not stored)."""
        ...

    # -- the HTTP API's bulk operations ---------------------------------------------

    def add_bulk(self, bulk: BulkRecord, forget_before: float) -> None:
        """Store a new bulk operation (unfinished, its heartbeat its creation);
        in the same transaction, forget the finished ones asked for before
        ``forget_before`` (epoch seconds)."""
        ...

    def bulk(self, bulk_id: str) -> BulkRecord | None:
        """The bulk operation of this id, if any."""
        ...

    def save_bulk(self, bulk_id: str, owner: str, progress: str, done: bool, now: float) -> bool:
        """Save an unfinished operation's progress and heartbeat; False (nothing
        written) when it is finished or another server has taken it over."""
        ...

    def take_bulks(self, owner: str, now: float, quiet_since: float) -> list[BulkRecord]:
        """Take over, for ``owner``, the unfinished operations whose heartbeat is
        older than ``quiet_since``; each is taken by one server only."""
        ...
