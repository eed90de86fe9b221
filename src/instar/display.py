"""How jobs and events look to a person: state colours, event narration, times
and durations, a job's fields and its timeline.

The CLI's tables, the demo's live view and story, and (through the same
words) the dashboard read this module, so a state has one colour and a move
one sentence everywhere. Styles are Rich style strings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import RenderableType
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from instar.human_time import duration, moment
from instar.lifecycle import State, is_terminal
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
    if event.trigger == Trigger.PHASE and "phase" in detail:
        return f"phase {detail['phase']}"
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


def field_value(value: Any, now: datetime | None = None) -> RenderableType:
    """A job's field in a cell: states in their colour, times readable, ``-`` for none,
    JSON for structures; text as it is (never read as markup: a value may hold
    ``[/x]``), and ``Text`` as given."""
    if isinstance(value, Text):
        return value
    if isinstance(value, State):
        return state_text(value)
    if isinstance(value, datetime):
        return moment(value, now)
    if isinstance(value, Progress):
        total = "" if value.total is None else f"/{value.total:g}"
        return Text(f"{value.current:g}{total} {value.message or ''}".strip())
    if isinstance(value, bool):
        return "yes" if value else "no"
    return Text(cell(value))


def fields_table(fields: Mapping[str, Any], now: datetime | None = None) -> Table:
    """Every field given, one per row: its name, then its value (wrapped, never cut)."""
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True, style="bold")
    table.add_column(overflow="fold")
    for name, value in fields.items():
        table.add_row(name, field_value(value, now))
    return table


def time_in_states(events: Sequence[Event], now: datetime) -> list[tuple[State, float]]:
    """Seconds the job spent in each state it went through, in order of first entry;
    the current state counts until ``now`` unless it is terminal."""
    spent: dict[State, float] = {}
    moves = [e for e in events if not is_note(e)]
    for move, after in zip(moves, [*moves[1:], None], strict=True):
        if after is None and is_terminal(move.to_state):
            spent.setdefault(move.to_state, 0.0)
            continue
        until = now if after is None else after.at
        spent[move.to_state] = spent.get(move.to_state, 0.0) + (until - move.at).total_seconds()
    return list(spent.items())


def timeline_table(
    events: Sequence[Event], now: datetime | None = None, title: str | None = "timeline"
) -> Table:
    """A whole timeline that reads at 80 columns: time (UTC), the state entered (in
    its colour; notes dim), the trigger, how long after the previous move, and who
    did it with the detail (the only column that wraps; nothing else is ever cut)."""
    days = {e.at.astimezone(UTC).date() for e in events}
    stamp = "%m-%d %H:%M:%S.%f" if len(days) > 1 else "%H:%M:%S.%f"
    if title is not None and days:
        title = f"{title} ({min(days).isoformat()} UTC)"
    table = Table(
        box=None,
        pad_edge=False,
        padding=(0, 1),
        header_style="bold",
        title=title,
        title_justify="left",
        title_style="bold",
    )
    table.add_column("at", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("trigger", no_wrap=True)
    table.add_column("after", no_wrap=True, justify="right")
    table.add_column("by, detail", overflow="fold", ratio=1, min_width=12)
    previous: Event | None = None
    for e in events:
        note = is_note(e)
        after = ""
        if not note and previous is not None:
            after = duration((e.at - previous.at).total_seconds())
        if not note:
            previous = e
        table.add_row(
            e.at.astimezone(UTC).strftime(stamp)[:-3],
            Text(e.to_state.value, style="dim" if note else STATE_STYLES[e.to_state]),
            Text(e.trigger, style="dim" if note else ""),
            after,
            _by_and_detail(e),
        )
    if now is not None and events:
        spent = time_in_states(events, now)
        summary = Text("time in each state: ", style="dim")
        for index, (state, seconds) in enumerate(spent):
            if index:
                summary.append(" · ", style="dim")
            summary.append(state.value, style=STATE_STYLES[state])
            if not (is_terminal(state) and index == len(spent) - 1):
                summary.append(f" {duration(seconds)}")
        table.caption = summary
        table.caption_justify = "left"
    return table


def _by_and_detail(event: Event) -> str:
    """Who made the move, then what it says. A claim names its worker and attempt;
    the moves and notes of that run are the same worker's, so they name none."""
    who = mover(event)
    if event.trigger == Trigger.CLAIMED:
        who = f"attempt {event.attempt} · {who}" if who else f"attempt {event.attempt}"
    elif who.startswith("worker ") and event.trigger not in MAINTENANCE_TRIGGERS:
        who = ""
    why = explain(event)
    if not why and isinstance(event.detail, dict):
        rest = {k: v for k, v in event.detail.items() if k != "traceback"}
        why = json.dumps(rest, ensure_ascii=False) if rest else ""
    return " · ".join(part for part in (who, why) if part)


TRACEBACK_LINES = 12
"""Lines of an error's traceback ``instar show`` prints (``--json`` has it all)."""


def error_fields(error: Mapping[str, Any] | None) -> dict[str, Any]:
    """A job's error as fields for people: ``error`` (type: message), the ``traceback``'s
    last lines as text, and any other keys as they are."""
    if error is None:
        return {"error": None}
    fields: dict[str, Any] = {"error": f"{error.get('type', 'error')}: {error.get('message', '')}"}
    trace = error.get("traceback")
    if isinstance(trace, str):
        lines = trace.rstrip("\n").splitlines()
        if len(lines) > TRACEBACK_LINES:
            cut = len(lines) - TRACEBACK_LINES
            earlier = f"[{cut} earlier line{'s' if cut > 1 else ''}: instar show --json has all]"
            lines = [earlier, *lines[-TRACEBACK_LINES:]]
        fields["traceback"] = Text("\n".join(lines), style="dim")
    for key, value in error.items():
        if key not in ("type", "message", "traceback"):
            fields[f"error {key}"] = value
    return fields


def cell(value: Any) -> str:
    """A field's value in a table cell: ``-`` for none, JSON for structures."""
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)
