"""Building new jobs from (definition, arguments, placement): checked, encoded,
ready for the engine to insert. Nothing here touches the database."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from instar.errors import InvalidOption
from instar.lifecycle import State
from instar.payload import encode
from instar.registry.definitions import JobDefinition
from instar.store.contract import NewJob


@dataclass(frozen=True, slots=True)
class Placement:
    """Where and when new jobs go, shared by every job of one enqueue call.

    ``start``: epoch seconds to start at (None: now). ``priority`` and
    ``queue``: None takes the definition's. ``after``: ids of jobs that must
    complete first. ``parent_id``: the job that spawned these."""

    start: float | None = None
    priority: int | None = None
    queue: str | None = None
    key: str | None = None
    after: tuple[int, ...] = ()
    parent_id: int | None = None


def start_time(delay: float | None, run_at: datetime | None, now: float) -> float | None:
    """Epoch seconds to start at, or None to start now. ``InvalidOption`` for a
    negative delay, both given, or a run_at that is not an aware datetime."""
    if delay is not None and run_at is not None:
        raise InvalidOption("give delay or run_at, not both")
    if delay is not None:
        if delay < 0:
            raise InvalidOption(f"delay must not be negative, got {delay}")
        return now + delay if delay > 0 else None
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise InvalidOption(f"run_at must be a datetime, got {type(run_at).__name__}")
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise InvalidOption(
                f"run_at {run_at.isoformat()} has no time zone; pass an aware datetime, "
                "e.g. datetime.now(timezone.utc) + timedelta(minutes=5)"
            )
        start = run_at.timestamp()
        return start if start > now else None
    return None


def new_jobs(
    definition: JobDefinition,
    many_args: Iterable[Mapping[str, Any]],
    placement: Placement,
    *,
    max_payload_bytes: int,
) -> list[NewJob]:
    """Check and encode jobs of one kind; what they share is worked out once.

    Raises ``InvalidOption`` (arguments not a mapping, an empty queue name) and
    ``PayloadError`` (arguments the handler cannot take, not JSON, too large)."""
    options = definition.options
    if placement.queue is not None and not placement.queue:
        raise InvalidOption("queue must be a non-empty name")
    state = State.READY
    if placement.after:
        state = State.PENDING
    elif placement.start is not None:
        state = State.SCHEDULED
    priority = options.priority if placement.priority is None else int(placement.priority)
    queue = placement.queue or options.queue
    what = f"arguments of job {definition.name!r}"
    specs = []
    for args in many_args:
        if not isinstance(args, Mapping):
            raise InvalidOption(
                f"job arguments must be a mapping of names to values, got {type(args).__name__}"
            )
        definition.check_arguments(args)
        args_dict = dict(args)
        specs.append(
            NewJob(
                name=definition.name,
                queue=queue,
                state=state,
                priority=priority,
                max_attempts=options.retry.max_attempts,
                args=args_dict,
                args_json=encode(args_dict, what=what, max_bytes=max_payload_bytes),
                key=placement.key,
                run_at=placement.start,
                lease_seconds=options.lease,
                pause_timeout=options.pause_timeout,
                after=placement.after,
                parent_id=placement.parent_id,
            )
        )
    return specs
