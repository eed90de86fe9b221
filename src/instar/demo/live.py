"""What the demo draws: the live view of its jobs and workers while the tour runs,
and the tables it prints at the end (jobs by final state, a job's timeline).

It also draws the demo's orders (instances of a durable machine): their states
in the live view, and each one's history at the end.

These functions only render what they are given; the story reads the database
and decides what to show. Colours and the words for a move come from
``instar.display``, shared with the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from instar.demo.processes import WorkerProcess, worker_of
from instar.display import (
    STATE_STYLES,
    Labeller,
    explain,
    is_note,
    mover,
    outcome,
    progress_cells,
    state_counts,
    state_text,
)
from instar.lifecycle import State
from instar.machines import HistoryEntry, Instance
from instar.models import Event, Job

WIDE = 100
"""From this console width on, the live table has room for a queue column."""


def live_view(
    jobs: Sequence[Job],
    counts: Mapping[State, int],
    workers: Sequence[WorkerProcess],
    *,
    elapsed: float,
    width: int,
    orders: Sequence[Instance] = (),
) -> RenderableType:
    """The live view: counts by state, a row per job (in the order given), the
    workers, and the orders' states."""
    summary = Text(f"+{elapsed:5.2f}s  ", style="dim")
    summary.append_text(state_counts(counts))
    wide = width >= WIDE
    table = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
    columns = ["job", "name", *(["queue"] if wide else []), "state", "try", "progress", ""]
    for column in columns:
        table.add_column(column, no_wrap=True)
    id_width = max((len(f"#{job.id}") for job in jobs), default=3)
    # The other columns at their widest, and the gaps between columns.
    used = 67 + id_width + (9 if wide else 0)
    message_width = max(8, min(30, width - used))
    table.add_column("", no_wrap=True, overflow="ellipsis", max_width=message_width)
    table.add_column("worker", no_wrap=True)
    for job in jobs:
        progress, percent, message = progress_cells(job.progress)
        table.add_row(
            f"#{job.id}",
            f"└ {job.name}" if job.parent_id is not None else job.name,
            *([job.queue] if wide else []),
            state_text(job.state),
            str(job.attempt),
            progress,
            Text(percent, justify="right"),
            message,
            worker_cell(worker_of(workers, job.worker), job),
        )
    line = Text("workers: ", style="dim")
    for worker in workers:
        status = "killed" if worker.killed else "running"
        line.append(f"{worker.label} pid {worker.pid} {status}  ")
    if not orders:
        return Group(summary, table, line)
    states = Text("orders: ", style="dim")
    for order in orders:
        states.append(f"{order.key} ")
        states.append(order.state, style=order_style(order))
        states.append("  ")
    return Group(summary, table, line, states)


def order_style(order: Instance) -> str:
    """Green once shipped or delivered, red when cancelled, yellow on the way."""
    if order.final:
        return "bold red" if order.state == "cancelled" else "bold green"
    return "green" if order.state.endswith("shipped") else "yellow"


def worker_cell(worker: WorkerProcess | None, job: Job) -> Text:
    """The job's worker: none while it waits paused or suspended; flagged when the
    demo killed it and the job does not know yet."""
    if job.state in (State.PAUSED, State.SUSPENDED):
        return Text("freed", style="dim")  # it holds no worker while it waits
    if worker is None:
        return Text(job.worker or "")
    if worker.killed and job.state is State.RUNNING:
        return Text(f"{worker.label} (killed)", style="bold red")
    return Text(worker.label)


def final_table(jobs: Iterable[Job]) -> Table:
    """Every demo job, grouped by the state it ended in."""
    table = Table(title="Jobs by final state", title_justify="left", header_style="bold")
    for column in ("state", "job", "name", "attempts", "outcome"):
        table.add_column(column)
    order = list(State)
    for job in sorted(jobs, key=lambda j: (order.index(j.state), j.id)):
        table.add_row(
            state_text(job.state),
            f"#{job.id}",
            job.name,
            f"{job.attempt}/{job.max_attempts}",
            outcome(job),
        )
    return table


def timeline_table(
    job: Job, events: Iterable[Event], why: str, *, started: float, label: Labeller
) -> Table:
    """A job's timeline, with times relative to ``started`` (an epoch time) and
    workers called by ``label``."""
    table = Table(
        title=f"Timeline of #{job.id} {job.name} ({why})",
        title_justify="left",
        header_style="bold",
    )
    for column in ("event", "at", "from", "to", "trigger", "try", "by", "detail"):
        table.add_column(column)
    for event in events:
        note = is_note(event)
        table.add_row(
            str(event.id),
            f"+{event.at.timestamp() - started:.2f}s",
            "" if event.from_state is None else event.from_state.value,
            Text(event.to_state.value, style="dim" if note else STATE_STYLES[event.to_state]),
            event.trigger,
            str(event.attempt),
            mover(event, label),
            explain(event, label),
            style="dim" if note else None,
        )
    return table


def order_history_table(
    order: Instance, entries: Iterable[HistoryEntry], why: str, *, started: float
) -> Table:
    """An order's history, with times relative to ``started`` (an epoch time):
    each entry with what it set in the context, a timer's entry with how late
    it fired."""
    table = Table(
        title=f"History of order {order.key} ({why}): now {order.state}",
        title_justify="left",
        header_style="bold",
    )
    for column in ("seq", "at", "event", "from", "to", "by"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail")
    before: dict[str, Any] = {}
    for entry in entries:
        changed = {k: v for k, v in entry.context.items() if k not in before or before[k] != v}
        before = entry.context
        detail = "  ".join(f"{k}={json.dumps(v)}" for k, v in changed.items())
        if entry.kind == "timer":
            late = (entry.detail or {}).get("late_ms", 0) / 1000
            detail = f"fired {late:.2f}s after it was due" + (f"  {detail}" if detail else "")
        by = entry.actor or ""
        table.add_row(
            str(entry.seq),
            f"+{entry.at.timestamp() - started:.2f}s",
            entry.event or entry.kind,
            entry.from_state or "",
            Text(entry.to_state, style=order_style(order) if entry.to_state == order.state else ""),
            f"#{by.removeprefix('job ')}'s reply" if by.startswith("job ") else by,
            detail,
        )
    return table
