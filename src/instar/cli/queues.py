"""Commands on queues: list them with their counts by state, pause one, resume one."""

from __future__ import annotations

import click
from rich.table import Table

from instar.cli.common import (
    database_option,
    json_option,
    opened_app,
    out,
    print_json,
    reports_errors,
)
from instar.display import state_text
from instar.lifecycle import State
from instar.models import QueueStats
from instar.schemas import QueueShape


@click.command()
@database_option
@json_option
@reports_errors
def queues(database: str | None, as_json: bool) -> None:
    """Every queue: counts by state, and whether it is paused."""
    with opened_app(database) as app:
        stats = app.queues()
    if as_json:
        print_json([QueueShape.of(q).as_json() for q in stats])
    else:
        out.print(_queues_table(stats))


@click.command("pause-queue")
@click.argument("queue")
@database_option
@reports_errors
def pause_queue(queue: str, database: str | None) -> None:
    """Claim nothing more from QUEUE until it is resumed (running jobs go on)."""
    with opened_app(database) as app:
        app.pause_queue(queue)
    out.print(f"queue {queue} paused")


@click.command("resume-queue")
@click.argument("queue")
@database_option
@reports_errors
def resume_queue(queue: str, database: str | None) -> None:
    """Let workers claim from QUEUE again."""
    with opened_app(database) as app:
        app.resume_queue(queue)
    out.print(f"queue {queue} resumed")


COMMANDS: tuple[click.Command, ...] = (queues, pause_queue, resume_queue)


def _queues_table(stats: list[QueueStats]) -> Table:
    """One row per queue, one column per state that any queue holds, headed in its colour
    (``instar.display`` has no queue table)."""
    states = [state for state in State if any(state in q.counts for q in stats)]
    table = Table("queue", "paused")
    for state in states:
        table.add_column(state_text(state))
    for q in stats:
        table.add_row(
            q.queue, "yes" if q.paused else "", *(str(q.counts.get(state, 0)) for state in states)
        )
    return table
