"""How jobs and events look to a person: state colours and event narration.

The CLI's tables, the demo's live view and story, and (through the same
words) the dashboard read this module, so a state has one colour and a move
one sentence everywhere. Styles are Rich style strings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import RenderableType
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from instar.lifecycle import State
from instar.models import Event, Job, Progress
from instar.vocabulary import Actor, Trigger

STATE_STYLES: dict[State, str] = {
    State.PENDING: "dim",
    State.SCHEDULED: "cyan",
    State.READY: "blue",
    State.RUNNING: "bold yellow",
    State.SUSPENDED: "magenta",
    State.BACKING_OFF: "dark_orange",
    State.PAUSED: "magenta",
    State.ORPHANED: "bold red",
    State.SERVING: "yellow",
    State.STOPPING: "yellow",
    State.COMPLETED: "green",
    State.FAILED: "red",
    State.CANCELLED: "grey50",
}

MAINTENANCE_TRIGGERS = frozenset(
    {
        Trigger.DUE,
        Trigger.WOKE,
        Trigger.LEASE_EXPIRED,
        Trigger.REQUEUED,
        Trigger.TOO_MANY_LOSSES,
        Trigger.PAUSE_TIMEOUT,
        Trigger.STRANDED,
    }
)
"""Moves made by the maintenance leader, not by the job's own worker."""

Labeller = Callable[[str | None], str]
"""Turns a worker id into what a reader calls that worker (``A``, a host name)."""


def _as_is(worker: str | None) -> str:
    return worker or ""


def state_text(state: State) -> Text:
    """A state's name in its colour."""
    return Text(state.value, style=STATE_STYLES[state])


def state_counts(counts: Mapping[State, int]) -> Text:
    """How many jobs are in each state, in lifecycle order, states with none left out."""
    text = Text()
    for state in State:
        if counts.get(state):
            text.append(f"{state.value} {counts[state]}  ", style=STATE_STYLES[state])
    return text


def progress_cells(progress: Progress | None, width: int = 10) -> tuple[RenderableType, str, str]:
    """A job's progress as three cells: a bar, a percentage and the message (empty
    when the job reported no progress, or none with a total)."""
    if progress is None or not progress.total:
        return "", "", ""
    fraction = min(1.0, progress.current / progress.total)
    bar = ProgressBar(total=1.0, completed=fraction, width=width)
    return bar, f"{fraction:.0%}", progress.message or ""


def is_note(event: Event) -> bool:
    """A note changes no state: progress, a phase, a step, a checkpoint."""
    return event.from_state == event.to_state


def is_step(event: Event) -> bool:
    """A ``step`` note: a durable step's function ran and its result was stored."""
    return event.trigger == Trigger.STEP and isinstance(event.detail, dict)


def moves_of(events: Sequence[Event]) -> list[State]:
    """The states a timeline went through, notes left out."""
    return [e.to_state for e in events if not is_note(e)]


def mover(event: Event, label: Labeller = _as_is) -> str:
    """Who made a move: maintenance, the actor who asked, or the job's worker."""
    if event.trigger in MAINTENANCE_TRIGGERS and event.actor in (None, Actor.SYSTEM):
        return "maintenance"
    if event.actor:
        return event.actor
    return f"worker {label(event.worker)}" if event.worker else ""


def explain(event: Event, label: Labeller = _as_is) -> str:
    """The interesting part of an event's detail, in a few words (plain text)."""
    detail = event.detail
    if event.trigger == Trigger.LEASE_EXPIRED:
        return f"worker {label(event.worker)} stopped renewing its lease"
    if event.trigger == Trigger.PAUSED and event.from_state is State.RUNNING:
        return "at a checkpoint, worker freed"
    if not isinstance(detail, dict):
        return "" if detail is None else str(detail)
    if event.trigger == Trigger.STEP and "step" in detail:
        return str(detail["step"])
    if "join" in detail:
        return "joins " + ", ".join(f"#{child}" for child in detail["join"])
    if "signal" in detail:
        verb = "awaits" if event.to_state is State.SUSPENDED else "got"
        return f"{verb} signal '{detail['signal']}'"
    if "current" in detail:
        total = detail.get("total")
        return f"{detail['current']}/{total} {detail.get('message') or ''}".strip()
    if "reason" in detail:
        return str(detail["reason"])
    words = f"{detail.get('type', 'error')}: {detail['message']}" if "message" in detail else ""
    if "next_retry_at" in detail:
        wait = float(detail["next_retry_at"]) - event.at.timestamp()
        words += f"; retry in {wait:.1f}s"
    return words


def describe(event: Event, label: Labeller = _as_is) -> str:
    """One move in words (Rich markup): from, to, trigger, who, why."""
    source = "created" if event.from_state is None else event.from_state.value
    style = STATE_STYLES[event.to_state]
    words = f"{source} → [{style}]{event.to_state.value}[/] ({escape(event.trigger)}"
    who = mover(event, label)
    words += f", {escape(who)})" if who else ")"
    why = explain(event, label)
    return f"{words}: {escape(why)}" if why else words


def outcome(job: Job) -> str:
    """What a finished job left behind: its result or its error."""
    if job.state is State.COMPLETED:
        return f"result {job.result!r}"
    if job.error is not None:
        return f"{job.error.get('type')}: {job.error.get('message')}"
    return ""


def current_phase(timeline: Sequence[Event]) -> str | None:
    """The phase the latest run last reported (phases live in the timeline only)."""
    phase = None
    for event in timeline:
        if event.trigger == Trigger.CLAIMED:
            phase = None
        elif event.trigger == Trigger.PHASE and isinstance(event.detail, dict):
            phase = event.detail.get("phase")
    return phase


def timeline_table(events: Sequence[Event], title: str | None = None) -> Table:
    """A whole timeline: id, time (UTC), from, to, trigger, attempt, worker, actor, detail."""
    table = Table(
        "event",
        "at (UTC)",
        "from",
        "to",
        "trigger",
        "attempt",
        "worker",
        "actor",
        "detail",
        title=title,
        title_justify="left",
    )
    for e in events:
        detail = e.detail
        if isinstance(detail, dict) and "traceback" in detail:
            detail = {k: v for k, v in detail.items() if k != "traceback"}
        table.add_row(
            str(e.id),
            e.at.strftime("%H:%M:%S.%f")[:-3],
            "" if e.from_state is None else e.from_state.value,
            Text(e.to_state.value, style="dim" if is_note(e) else STATE_STYLES[e.to_state]),
            e.trigger,
            str(e.attempt),
            e.worker or "",
            e.actor or "",
            "" if detail is None else json.dumps(detail),
        )
    return table


def cell(value: Any) -> str:
    """A field's value in a table cell: ``-`` for none, JSON for structures."""
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)
