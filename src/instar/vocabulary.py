"""The closed sets of names Instar writes into its timeline and tables.

These names are part of the public contract: the timeline stores them, the
CLI's ``--json`` prints them, and the HTTP API's event stream will publish
them. A new member is a new feature; renaming one breaks readers.

Every move between states names its ``Trigger`` (why it happened); a note
(an event that changes no state) names one too. ``Actor`` lists the actors
Instar itself records; callers may pass any other name (an API token's name,
``demo``), so the actor column stays free text.
"""

from __future__ import annotations

import enum
from typing import Self


class _Named(enum.StrEnum):
    """A closed set of names, each with its meaning (``member.meaning``)."""

    meaning: str

    def __new__(cls, value: str, meaning: str = "") -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member


class Trigger(_Named):
    """Why an event happened. Moves first, then notes (`from == to`)."""

    ENQUEUED = (
        "enqueued",
        "The job was created (the first event: from nothing to its entry state).",
    )
    CLAIMED = (
        "claimed",
        "A worker took a ready job: ready -> running, with a fresh lease token.",
    )
    COMPLETED = (
        "completed",
        "The handler returned; its result is stored.",
    )
    FAILED = (
        "failed",
        "The handler raised an error no retry can fix (`Fatal`, a non-retriable type).",
    )
    RETRY_SCHEDULED = (
        "retry-scheduled",
        "The handler raised a retriable error; the job backs off until `next_retry_at`.",
    )
    RETRIES_EXHAUSTED = (
        "retries-exhausted",
        "The last allowed attempt failed: failed, or paused under `on_exhausted='pause'`.",
    )
    CANCELLED = (
        "cancelled",
        "Cancelled on request: at once, or by its worker at a checkpoint.",
    )
    RELEASED = (
        "released",
        "Handed back to ready by a worker that shut down first; the attempt is not counted.",
    )
    SUSPENDED = (
        "suspended",
        "The handler waits (durable sleep, signal, children); its worker is freed.",
    )
    PAUSED = (
        "paused",
        "Paused on request: at once when waiting, at a checkpoint when running.",
    )
    RESUMED = (
        "resumed",
        "An operator resumed a paused job.",
    )
    RETRIED = (
        "retried",
        "An operator retried a failed job (failed -> ready), with a fresh attempt count.",
    )
    DUE = (
        "due",
        "A start time (`run_at`) or a retry time (`next_retry_at`) came.",
    )
    WOKE = (
        "woke",
        "A durable sleep ended, or a signal's timeout passed.",
    )
    SIGNAL = (
        "signal",
        "An awakeable the job waits on was resolved or rejected.",
    )
    CHILDREN_ENDED = (
        "children-ended",
        "Every child a suspended parent joins has ended.",
    )
    DEPENDENCIES_MET = (
        "dependencies-met",
        "Every job a pending job was enqueued `after` has completed.",
    )
    DEPENDENCY_FAILED = (
        "dependency-failed",
        "A job a pending job waits for failed or was cancelled.",
    )
    LEASE_EXPIRED = (
        "lease-expired",
        "The worker holding the job stopped renewing its lease: the job is orphaned.",
    )
    REQUEUED = (
        "requeued",
        "An orphaned job goes back to ready.",
    )
    TOO_MANY_LOSSES = (
        "too-many-losses",
        "An orphaned job whose worker was lost on every allowed attempt fails.",
    )
    PAUSE_TIMEOUT = (
        "pause-timeout",
        "A paused job nobody resumed within its `pause_timeout` is cancelled.",
    )
    STOP_REQUESTED = (
        "stop-requested",
        "An operator asked a serving service job to stop: serving -> stopping.",
    )
    RETURNED = (
        "returned",
        "A serving service job's handler returned on its own: serving -> stopping.",
    )
    SERVING = (
        "serving",
        "A service job said it is up (`ctx.ready()`): running -> serving.",
    )
    STRANDED = (
        "stranded",
        "Maintenance woke a suspended job that had nothing left to wake it.",
    )

    PROGRESS = (
        "progress",
        "Note: the handler reported progress (current, total, message).",
    )
    PHASE = (
        "phase",
        "Note: the handler entered a named phase.",
    )
    STEP = (
        "step",
        "Note: a durable step ran and its result was stored.",
    )
    CHECKPOINT = (
        "checkpoint",
        "Note: the handler saved a checkpoint.",
    )
    CANCEL_REQUESTED = (
        "cancel-requested",
        "Note: someone asked to cancel a leased job; its worker acts on it.",
    )
    PAUSE_REQUESTED = (
        "pause-requested",
        "Note: someone asked to pause a running job at its next checkpoint.",
    )
    REFUSED = (
        "refused",
        "Note: a worker's report was refused (its lease token was stale); detail says which.",
    )


class Actor(_Named):
    """Who asked for a change, among the actors Instar itself records."""

    SYSTEM = (
        "system",
        "Nobody asked: timers, lease rescue, dependency and join bookkeeping.",
    )
    APP = (
        "app",
        "A call on `instar.App` (the default actor of its verbs).",
    )
    CLI = (
        "cli",
        "The `instar` command line.",
    )
    HTTP = (
        "http",
        "A request to the HTTP API served with `--no-auth` (no token to name it).",
    )


def job_actor(job_id: int) -> str:
    """The actor of changes a job makes itself (`ctx.spawn`): `job 12`."""
    return f"job {job_id}"


class AwakeableState(_Named):
    """An awakeable is settled once: pending -> resolved | rejected | timed-out."""

    PENDING = "pending", "Created; nobody has answered it yet."
    RESOLVED = "resolved", "Answered with a value; the waiting handler gets it."
    REJECTED = "rejected", "Refused with a reason; the waiting handler raises SignalRejected."
    TIMED_OUT = "timed-out", "Not answered before its timeout; the handler raises SignalTimeout."


class DependencyKind(_Named):
    """Why one job waits for another."""

    AFTER = (
        "after",
        "Given at enqueue (`after=[...]`): the job is pending until they complete.",
    )
    JOIN = (
        "join",
        "A parent suspended in `ctx.join` until its children end.",
    )
