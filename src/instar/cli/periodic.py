"""Commands on periodic jobs: list their schedules, pause one, resume one."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from instar.cli.common import (
    app_option,
    database_option,
    json_option,
    opened_app,
    out,
    print_json,
    reports_errors,
)
from instar.errors import ConfigurationError
from instar.periodic import ScheduleInfo


def _as_json(info: ScheduleInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "expression": info.expression,
        "tz": info.tz,
        "paused": info.paused,
        "next_slot": None if info.next_slot is None else info.next_slot.isoformat(),
        "last_slot": None if info.last_slot is None else info.last_slot.isoformat(),
        "last_job_id": info.last_job_id,
        "stale": info.stale,
    }


def _table(found: list[ScheduleInfo]) -> Table:
    table = Table(title="Periodic jobs")
    for column in ("job", "schedule", "status", "next slot", "handled up to", "last job"):
        table.add_column(column)
    for info in found:
        status = "stale: gone from the code" if info.stale else "paused" if info.paused else "on"
        table.add_row(
            info.name,
            f"{info.expression} ({info.tz})",
            status,
            "-" if info.next_slot is None else f"{info.next_slot:%Y-%m-%d %H:%M %Z}",
            "-" if info.last_slot is None else f"{info.last_slot:%Y-%m-%d %H:%M %Z}",
            "-" if info.last_job_id is None else str(info.last_job_id),
        )
    return table


@click.command()
@app_option
@database_option
@json_option
@reports_errors
def periodic(app_ref: str | None, database: str | None, as_json: bool) -> None:
    """Periodic jobs of the --app code and of the database: schedule, next slot,
    last slot handled and last job made; those in the database that the code no
    longer has are stale (they enqueue nothing)."""
    if app_ref is None:
        raise ConfigurationError(
            "instar periodic needs --app module:attribute: the schedules are in your code"
        )
    with opened_app(database, app_ref) as app:
        found = app.schedules()
    if as_json:
        print_json([_as_json(info) for info in found])
    elif found:
        out.print(_table(found))
    else:
        out.print("no periodic jobs: register one with @app.periodic and pass --app")


@click.command("pause-periodic")
@click.argument("name")
@app_option
@database_option
@reports_errors
def pause_periodic(name: str, app_ref: str | None, database: str | None) -> None:
    """Enqueue nothing for the periodic job NAME until it is resumed (every worker
    sees it; slots that pass meanwhile are skipped)."""
    with opened_app(database, app_ref) as app:
        changed = app.pause_schedule(name)
    out.print(f"periodic job {name} paused" if changed else f"{name} was paused already")


@click.command("resume-periodic")
@click.argument("name")
@app_option
@database_option
@reports_errors
def resume_periodic(name: str, app_ref: str | None, database: str | None) -> None:
    """Enqueue the periodic job NAME again, from its next slot."""
    with opened_app(database, app_ref) as app:
        changed = app.resume_schedule(name)
    out.print(f"periodic job {name} resumed" if changed else f"{name} was not paused")


COMMANDS: tuple[click.Command, ...] = (periodic, pause_periodic, resume_periodic)
