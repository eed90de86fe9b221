"""One JSON shape per record: jobs, events, awakeables, queue summaries.

The CLI's ``--json``, the HTTP API and the dashboard all turn records into
JSON here and nowhere else, so a field is named, typed and documented once;
the same models describe the HTTP API in its OpenAPI document. Times are
ISO 8601 in UTC; states, triggers and awakeable states are the lifecycle's
and ``instar.vocabulary``'s names.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from instar.lifecycle import ENTRY_STATES, JOBS, State
from instar.models import Awakeable, Event, Job, QueueStats
from instar.vocabulary import AwakeableState


class _Shape(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def as_json(self) -> dict[str, Any]:
        """This record as plain JSON-compatible data (what ``json.dumps`` takes)."""
        return self.model_dump(mode="json")


class ProgressShape(_Shape):
    current: float
    total: float | None
    message: str | None


class JobShape(_Shape):
    """Every field of a job a caller may see (its lease token stays inside)."""

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
    version: int
    """Grows with every change: the HTTP API's ETag, for If-Match."""
    worker: str | None
    progress: ProgressShape | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    pause_requested: bool
    checkpoint: Any
    wake_at: datetime | None
    pause_deadline: datetime | None
    parent_id: int | None

    @classmethod
    def of(cls, job: Job) -> JobShape:
        progress = job.progress
        return cls(
            id=job.id,
            name=job.name,
            queue=job.queue,
            state=job.state,
            priority=job.priority,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            args=job.args,
            result=job.result,
            error=job.error,
            key=job.key,
            run_at=job.run_at,
            next_retry_at=job.next_retry_at,
            created_at=job.created_at,
            updated_at=job.updated_at,
            version=job.version,
            worker=job.worker,
            progress=None
            if progress is None
            else ProgressShape(
                current=progress.current, total=progress.total, message=progress.message
            ),
            lease_expires_at=job.lease_expires_at,
            cancel_requested=job.cancel_requested,
            pause_requested=job.pause_requested,
            checkpoint=job.checkpoint,
            wake_at=job.wake_at,
            pause_deadline=job.pause_deadline,
            parent_id=job.parent_id,
        )


class JobBriefShape(_Shape):
    """A job named in another's record (a child, a dependency)."""

    id: int
    name: str
    state: State

    @classmethod
    def of(cls, job: Job) -> JobBriefShape:
        return cls(id=job.id, name=job.name, state=job.state)


class EventShape(_Shape):
    """One line of a timeline. ``from_state`` is null on the first event; a note
    (progress, a phase, a step) has ``from_state == to_state``. ``trigger`` is
    one of ``instar.vocabulary.Trigger``; ``actor`` is who asked."""

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

    @classmethod
    def of(cls, event: Event) -> EventShape:
        return cls(
            id=event.id,
            job_id=event.job_id,
            at=event.at,
            from_state=event.from_state,
            to_state=event.to_state,
            trigger=event.trigger,
            attempt=event.attempt,
            worker=event.worker,
            actor=event.actor,
            detail=event.detail,
        )


class AwakeableShape(_Shape):
    id: str
    job_id: int
    name: str
    state: AwakeableState
    value: Any
    reason: str | None
    timeout_at: datetime | None
    created_at: datetime
    resolved_at: datetime | None

    @classmethod
    def of(cls, awakeable: Awakeable) -> AwakeableShape:
        return cls(
            id=awakeable.id,
            job_id=awakeable.job_id,
            name=awakeable.name,
            state=awakeable.state,
            value=awakeable.value,
            reason=awakeable.reason,
            timeout_at=awakeable.timeout_at,
            created_at=awakeable.created_at,
            resolved_at=awakeable.resolved_at,
        )


class QueueShape(_Shape):
    """A queue's jobs counted by state (states with none left out), whether it
    is paused, and how long its oldest ready job has waited (seconds, at the
    time of the answer; null when none is ready)."""

    queue: str
    paused: bool
    counts: dict[State, int]
    oldest_ready_age: float | None

    @classmethod
    def of(cls, stats: QueueStats, now: float) -> QueueShape:
        at = stats.oldest_ready_at
        return cls(
            queue=stats.queue,
            paused=stats.paused,
            counts=dict(stats.counts),
            oldest_ready_age=None if at is None else round(max(0.0, now - at), 3),
        )


def lifecycle_json() -> dict[str, Any]:
    """The job lifecycle table as JSON: every state in display order with its
    kind, meaning, whether jobs start or end in it, and the states it moves to
    (``instar lifecycle --json`` and the HTTP API's ``/meta``)."""
    return {
        "states": [
            {
                "state": state.value,
                "kind": JOBS.kinds[state],
                "meaning": JOBS.meanings[state],
                "entry": state in ENTRY_STATES,
                "final": state in JOBS.final,
                "moves_to": [target.value for target in JOBS.targets(state)],
            }
            for state in JOBS.states
        ]
    }
