"""The job lifecycle: every state, its kind, and the moves it allows.

This table is the single source of truth. The engine checks it before every
write, the SQL guards and the diagrams are derived from it, and nothing else
in Instar restates it. The table is validated when this module is imported.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from instar.table import InvalidTable, TransitionTable


class State(enum.StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    READY = "ready"
    RUNNING = "running"
    SUSPENDED = "suspended"
    BACKING_OFF = "backing-off"
    PAUSED = "paused"
    ORPHANED = "orphaned"
    SERVING = "serving"
    STOPPING = "stopping"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Kind(enum.StrEnum):
    INITIAL = "initial"
    TIMER = "timer"
    CLAIMABLE = "claimable"
    LEASED = "leased"
    WAITING = "waiting"
    PARKED = "parked"
    TRANSIENT = "transient"
    TERMINAL = "terminal"


S = State

KINDS: Mapping[State, Kind] = {
    S.PENDING: Kind.INITIAL,
    S.SCHEDULED: Kind.TIMER,
    S.READY: Kind.CLAIMABLE,
    S.RUNNING: Kind.LEASED,
    S.SUSPENDED: Kind.WAITING,
    S.BACKING_OFF: Kind.TIMER,
    S.PAUSED: Kind.PARKED,
    S.ORPHANED: Kind.TRANSIENT,
    S.SERVING: Kind.LEASED,
    S.STOPPING: Kind.LEASED,
    S.COMPLETED: Kind.TERMINAL,
    S.FAILED: Kind.TERMINAL,
    S.CANCELLED: Kind.TERMINAL,
}

TRANSITIONS: Mapping[State, frozenset[State]] = {
    S.PENDING: frozenset({S.READY, S.SCHEDULED, S.CANCELLED, S.FAILED}),
    S.SCHEDULED: frozenset({S.READY, S.PAUSED, S.CANCELLED}),
    S.READY: frozenset({S.RUNNING, S.PAUSED, S.CANCELLED}),
    S.RUNNING: frozenset(
        {
            S.COMPLETED,
            S.BACKING_OFF,
            S.FAILED,
            S.SUSPENDED,
            S.PAUSED,
            S.CANCELLED,
            S.ORPHANED,
            S.SERVING,
            S.READY,
        }
    ),
    S.SUSPENDED: frozenset({S.READY, S.CANCELLED}),
    S.BACKING_OFF: frozenset({S.READY, S.PAUSED, S.FAILED, S.CANCELLED}),
    S.PAUSED: frozenset({S.READY, S.SCHEDULED, S.CANCELLED}),
    S.ORPHANED: frozenset({S.READY, S.FAILED, S.CANCELLED}),
    S.SERVING: frozenset({S.STOPPING, S.FAILED, S.ORPHANED, S.CANCELLED}),
    S.STOPPING: frozenset({S.COMPLETED, S.FAILED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset({S.READY}),
    S.CANCELLED: frozenset(),
}

MEANINGS: Mapping[State, str] = {
    S.PENDING: "created; waits until every job it was enqueued after has completed",
    S.SCHEDULED: "waiting for its start time (run_at)",
    S.READY: "eligible; waiting for a free worker",
    S.RUNNING: "a worker holds its lease and runs the handler",
    S.SUSPENDED: "awaits a signal, a durable sleep or its child jobs; holds no worker",
    S.BACKING_OFF: "the last attempt failed with a retriable error; waits for next_retry_at",
    S.PAUSED: (
        "needs a person: paused on request, or its retries ran out under "
        "on_exhausted='pause'; holds no worker; cancelled after its pause_timeout"
    ),
    S.ORPHANED: "its worker's lease expired (worker lost)",
    S.SERVING: "a service job is up and keeps its lease by heartbeat",
    S.STOPPING: "a service job is shutting down gracefully",
    S.COMPLETED: "the handler returned; result is stored",
    S.FAILED: (
        "a non-retriable error, retries exhausted, its worker lost on every attempt, "
        "or a dependency failed; an operator may retry it"
    ),
    S.CANCELLED: "cancelled on request, or paused longer than its pause_timeout",
}

INITIAL: State = S.PENDING

# A job is created in one of these: pending while it waits for dependencies,
# scheduled when it starts later, ready otherwise. No move enters pending.
ENTRY_STATES: frozenset[State] = frozenset({S.PENDING, S.SCHEDULED, S.READY})

JOBS: TransitionTable[State] = TransitionTable(
    name="job lifecycle",
    states=tuple(State),
    transitions=TRANSITIONS,
    entry=ENTRY_STATES,
    final=frozenset(s for s, k in KINDS.items() if k is Kind.TERMINAL),
    initial_only=frozenset({INITIAL}),
    kinds={s: k.value for s, k in KINDS.items()},
    meanings=MEANINGS,
)
"""The lifecycle as a ``TransitionTable``: what the validator and the diagrams read."""

CLAIM: tuple[State, State] = (S.READY, S.RUNNING)
"""The move a worker's claim makes. The claim SQL takes both names from here."""


def can_transition(from_state: State, to_state: State) -> bool:
    """Whether the table allows moving a job from ``from_state`` to ``to_state``."""
    return to_state in TRANSITIONS[from_state]


def is_terminal(state: State) -> bool:
    return KINDS[state] is Kind.TERMINAL


def is_leased(state: State) -> bool:
    """Leased states are the ones a worker holds and must keep alive by heartbeat."""
    return KINDS[state] is Kind.LEASED


def states_of_kind(kind: Kind) -> frozenset[State]:
    return frozenset(state for state, k in KINDS.items() if k is kind)


def sources_of(to_state: State) -> frozenset[State]:
    """Every state from which ``to_state`` may be entered (used to build SQL guards)."""
    return JOBS.sources(to_state)


def validate(table: TransitionTable[State]) -> None:
    """Refuse a job table that breaks the lifecycle's invariants (``InvalidTable``,
    a ``ValueError``, naming every problem): one initial state that nothing
    enters; every state reachable from an entry state; every non-terminal state
    with a path to a terminal one; and every kind of state known."""
    table.validate()
    unknown = set(table.states) - set(KINDS)
    if unknown:
        raise InvalidTable(table.name, [f"states without a kind: {sorted(unknown)}"])


validate(JOBS)
if not can_transition(*CLAIM):
    raise InvalidTable(JOBS.name, [f"the claim {CLAIM[0]} -> {CLAIM[1]} is not in the table"])
