"""Commands on queues: list them with their counts by state, pause one, resume one."""

from __future__ import annotations

import click
from rich.table import Table

from instar.app import App
from instar.cli.common import (
    database_option,
    json_option,
    opened_app,
    out,
    print_json,
    reports_errors,
)
from instar.display import state_text
from instar.errors import InvalidOption
from instar.lifecycle import State
from instar.models import FlowLimitInfo, QueueStats
from instar.registry.limits import check_name
from instar.schemas import QueueShape


@click.command()
@database_option
@json_option
@reports_errors
def queues(database: str | None, as_json: bool) -> None:
    """Every queue: counts by state, and whether it is paused; then each limit
    the workers run with, and how many of its jobs run and wait."""
    with opened_app(database, read_only=True) as app:
        stats = app.queues()
        limits = app.limits()
    if as_json:
        print_json([QueueShape.of(q, app.clock.now()).as_json() for q in stats])
        return
    if stats:
        out.print(_queues_table(stats))
    else:
        out.print("no queues yet: no job has been enqueued")
    if limits:
        out.print()
        out.print(_limits_table(limits))


new_option = click.option(
    "--new", is_flag=True, help="The queue has had no job yet: act on it all the same."
)


@click.command("pause-queue")
@click.argument("queue")
@database_option
@new_option
@json_option
@reports_errors
def pause_queue(queue: str, database: str | None, new: bool, as_json: bool) -> None:
    """Claim nothing more from QUEUE until it is resumed (running jobs go on)."""
    check_name(queue, "queue")
    with opened_app(database) as app:
        _known(app, queue, new)
        changed = app.pause_queue(queue)
        stats = _stats(app, queue)
    if as_json:
        print_json(QueueShape.of(stats, app.clock.now()).as_json())
    else:
        out.print(f"queue {queue} paused" if changed else f"queue {queue} was paused already")


@click.command("resume-queue")
@click.argument("queue")
@database_option
@new_option
@json_option
@reports_errors
def resume_queue(queue: str, database: str | None, new: bool, as_json: bool) -> None:
    """Let workers claim from QUEUE again."""
    check_name(queue, "queue")
    with opened_app(database) as app:
        _known(app, queue, new)
        changed = app.resume_queue(queue)
        stats = _stats(app, queue)
    if as_json:
        print_json(QueueShape.of(stats, app.clock.now()).as_json())
    else:
        out.print(f"queue {queue} resumed" if changed else f"queue {queue} was not paused")


COMMANDS: tuple[click.Command, ...] = (queues, pause_queue, resume_queue)


def _known(app: App, queue: str, new: bool) -> None:
    """Refuse a queue no job has ever been on (a typo, most likely) unless ``new``."""
    if new:
        return
    known = [q.queue for q in app.queues()]
    if queue not in known:
        names = ", ".join(known) if known else "none yet"
        raise InvalidOption(
            f"no job has been on queue {queue!r} (known queues: {names}); "
            "check the name, or pass --new for a queue that has had no job yet"
        )


def _stats(app: App, queue: str) -> QueueStats:
    """The queue as it is now (with no counts if no job has been on it)."""
    found = next((q for q in app.queues() if q.queue == queue), None)
    return found if found is not None else QueueStats(queue, False, {})


def _queues_table(stats: list[QueueStats]) -> Table:
    """One row per queue, one column per state that any queue holds, headed in its colour
    (``instar.display`` has no queue table)."""
    states = [state for state in State if any(state in q.counts for q in stats)]
    table = Table("queue", "paused", box=None, pad_edge=False, header_style="bold")
    for state in states:
        table.add_column(state_text(state))
    for q in stats:
        table.add_row(
            q.queue, "yes" if q.paused else "", *(str(q.counts.get(state, 0)) for state in states)
        )
    return table


def _limits_table(limits: list[FlowLimitInfo]) -> Table:
    """One row per declared limit: what it applies to, its bound, and its jobs
    running (leased) and waiting (ready)."""
    table = Table(
        "limit on", "concurrency", "rate", "running", "waiting",
        box=None, pad_edge=False, header_style="bold",
    )  # fmt: skip
    for limit in limits:
        concurrency = "" if limit.concurrency is None else str(limit.concurrency)
        if limit.concurrency is not None and limit.key:
            concurrency += f" per {limit.key}"
        rate = ""
        if limit.rate_count is not None and limit.rate_per is not None:
            rate = f"{limit.rate_count} per {limit.rate_per:g} s"
            if limit.rate_key:
                rate += f" per {limit.rate_key}"
        table.add_row(
            f"{limit.kind} {limit.name}",
            concurrency,
            rate,
            str(limit.running),
            str(limit.waiting),
        )
    return table
