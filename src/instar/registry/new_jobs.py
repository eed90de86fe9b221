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
from instar.registry.limits import (
    check_delay,
    check_id,
    check_key,
    check_name,
    check_priority,
    check_run_at,
    check_start,
)
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
    trace_context: str | None = None
    """The enqueuing code's trace context (``instar.tracing.carrier``)."""


def start_time(delay: float | None, run_at: datetime | None, now: float) -> float | None:
    """Epoch seconds to start at, or None to start now. ``InvalidOption`` for both
    given, a delay that is not a finite number of seconds from 0 to ``MAX_DELAY``
    (a bool, a str, NaN, infinity), or a run_at that is not an aware datetime at
    most ``MAX_DELAY`` ahead (see ``instar.registry.limits``)."""
    if delay is not None and run_at is not None:
        raise InvalidOption("give delay or run_at, not both")
    if delay is not None:
        seconds = check_delay(delay)
        return now + seconds if seconds > 0 else None
    if run_at is not None:
        start = check_run_at(run_at, now)
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

    Raises ``InvalidOption`` (arguments not a mapping; a queue, key, priority,
    start or ``after`` id outside the limits of ``instar.registry.limits``) and
    ``PayloadError`` (arguments the handler cannot take, values that do not fit
    its annotations, not JSON, too large)."""
    options = definition.options
    queue = options.queue if placement.queue is None else check_name(placement.queue, "queue")
    priority = options.priority if placement.priority is None else placement.priority
    priority = check_priority(priority)
    key = None if placement.key is None else check_key(placement.key)
    start = check_start(placement.start)
    for job_id in placement.after:
        check_id(job_id, "a job id in after")
    if placement.parent_id is not None:
        check_id(placement.parent_id, "parent id")
    state = State.READY
    if placement.after:
        state = State.PENDING
    elif start is not None:
        state = State.SCHEDULED
    what = f"arguments of job {definition.name!r}"
    specs = []
    for args in many_args:
        if type(args) is not dict and not isinstance(args, Mapping):
            raise InvalidOption(
                f"job arguments must be a mapping of names to values, got {type(args).__name__}"
            )
        definition.check_names(args)
        args_dict = dict(args)
        args_json = encode(args_dict, what=what, max_bytes=max_payload_bytes)
        definition.check_types(args_dict)
        limit_key, rate_key = definition.flow_keys(args_dict)
        specs.append(
            NewJob(
                name=definition.name,
                queue=queue,
                state=state,
                priority=priority,
                max_attempts=options.retry.max_attempts,
                args=args_dict,
                args_json=args_json,
                key=key,
                run_at=start,
                lease_seconds=options.lease,
                pause_timeout=options.pause_timeout,
                after=placement.after,
                parent_id=placement.parent_id,
                limit_key=limit_key,
                rate_key=rate_key,
                trace_context=placement.trace_context,
            )
        )
    return specs
