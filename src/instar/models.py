"""What a job and an event look like to callers: records, no behaviour.

Every record is a snapshot of what was read; changing one changes nothing in
the database. They are frozen, but for ``Job``: building a frozen dataclass
costs about 3 µs more per instance (``object.__setattr__`` per field), paid for
every job claimed, read or enqueued."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from instar.lifecycle import State
from instar.vocabulary import AwakeableState


@dataclass(frozen=True, slots=True)
class Progress:
    current: float
    total: float | None = None
    message: str | None = None


@dataclass(slots=True)
class Job:
    """One job as read (a snapshot: use the App to change a job)."""

    id: int
    name: str
    queue: str
    state: State
    priority: int
    attempt: int
    max_attempts: int
    args: dict[str, Any]
    result: Any
    error: dict[str, Any] | None
    key: str | None
    run_at: datetime | None
    next_retry_at: datetime | None
    created_at: datetime
    updated_at: datetime
    worker: str | None
    progress: Progress | None
    lease_seconds: float
    lease_expires_at: datetime | None
    cancel_requested: bool
    version: int
    lease_token: str | None = None
    checkpoint: Any = None
    pause_requested: bool = False
    wake_at: datetime | None = None
    pause_deadline: datetime | None = None
    pause_timeout: float = 86400.0
    parent_id: int | None = None
    rerun: bool = False
    """The last run ended without using up its attempt (paused, suspended,
    released): the next run continues that attempt instead of counting a new one."""
    trace_context: str | None = None
    """The trace context of the code that enqueued it (``instar.tracing``), if any."""


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a job's timeline. A note (progress, a refused report) has
    ``from_state == to_state``; the first event has ``from_state`` None."""

    id: int
    job_id: int
    at: datetime
    from_state: State | None
    to_state: State
    trigger: str
    attempt: int
    worker: str | None
    actor: str | None
    detail: Any


@dataclass(frozen=True, slots=True)
class Awakeable:
    """An outside signal a job waits for; settled once: resolved, rejected or timed out."""

    id: str
    job_id: int
    name: str
    state: AwakeableState
    value: Any
    reason: str | None
    timeout_at: datetime | None
    created_at: datetime
    resolved_at: datetime | None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A queue's jobs by state, whether it is paused, and since when (epoch
    seconds) its oldest ready job has waited (None: none is ready)."""

    queue: str
    paused: bool
    counts: dict[State, int]
    oldest_ready_at: float | None = None


@dataclass(frozen=True, slots=True)
class FlowLimitInfo:
    """One limit as workers declared it (``instar.registry.flow``): on a queue or on a
    job name (``kind``: "queue" or "job"), its concurrency and the key it
    counts by, its rate (``rate_count`` starts per ``rate_per`` seconds) and
    the key it spaces by; with, when read back, how many of its jobs run
    (leased) and wait (ready), and when (epoch seconds) a worker last declared it."""

    kind: str
    name: str
    concurrency: int | None
    key: str | None
    rate_count: int | None
    rate_per: float | None
    rate_key: str | None
    running: int = 0
    waiting: int = 0
    seen_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A bearer token of the HTTP API as stored: its name (the actor of what it
    does), a SHA-256 digest of the secret (the secret itself is never kept), its
    scopes, the one queue it is limited to if any, and epoch seconds."""

    name: str
    digest: str
    scopes: frozenset[str]
    queue: str | None
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A periodic job's schedule as stored: its expression and zone as last seen
    in code, whether it is paused, the last slot handled and the last job made
    (epoch seconds, job id), and when a leading worker last had it in code."""

    name: str
    expression: str
    tz: str
    paused: bool
    last_slot: float
    last_job_id: int | None
    seen_at: float


@dataclass(frozen=True, slots=True)
class BulkRecord:
    """A bulk operation of the HTTP API as stored: what was asked (``spec``) and
    how far it got (``progress``), JSON text the API owns; whether it is done,
    the server process running it (``owner``), and epoch seconds: when it was
    asked for and when its server last saved progress (``heartbeat_at``)."""

    id: str
    spec: str
    progress: str
    done: bool
    owner: str
    created_at: float
    heartbeat_at: float
