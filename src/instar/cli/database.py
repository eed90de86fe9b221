"""Commands about the database and the lifecycle as a whole: migrate the schema, draw the
lifecycle, run the demo tour, prune finished jobs."""

from __future__ import annotations

import sys
from typing import cast

import click

from instar.cli.common import (
    app_option,
    database_option,
    json_option,
    opened_app,
    out,
    print_json,
    printable,
    reports_errors,
)
from instar.diagram import Format, render
from instar.errors import DatabaseCorrupt
from instar.lifecycle import JOBS
from instar.registry.limits import parse_duration
from instar.schemas import lifecycle_json
from instar.store.urls import redact


@click.command()
@database_option
@json_option
@reports_errors
def migrate(database: str | None, as_json: bool) -> None:
    """Create or upgrade the schema (also done on first use)."""
    with opened_app(database) as app:
        version = app.migrate()
        problems = app.check()
    shown = printable(redact(app.database))
    if problems:
        raise DatabaseCorrupt(
            f"the database {shown} is damaged: {printable(problems[0])}"
            + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else "")
            + "; restore it from a backup, or move it away to start with a new database"
        )
    if as_json:
        print_json({"database": shown, "schema_version": version})
    else:
        out.print(f"schema of {shown} is up to date (version {version})")


@click.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "mermaid", "dot"]),
    default="table",
    show_default=True,
)
@json_option
def lifecycle(fmt: str, as_json: bool) -> None:
    """Draw the job lifecycle from its one table."""
    if as_json:
        print_json(lifecycle_json())
        return
    click.echo(render(cast(Format, fmt)))


@click.command()
@click.option(
    "--database",
    default=None,
    help="Run the tour on this database (default: a fresh SQLite file of its own; "
    "$INSTAR_DATABASE is not used).",
)
@reports_errors
def demo(database: str | None) -> None:
    """Tour the lifecycle on a fresh database: retries, a cancel, a lost worker, a pause
    and resume, a signal, children and a dependency."""
    # Imported only here: the demo module is large and registers handlers of its own.
    from instar.demo import run_demo

    sys.exit(run_demo(database, out))


@click.command()
@click.option(
    "--older-than",
    default=None,
    help="Prune finished jobs older than this (90s, 5m, 1h, 7d); without it, the "
    "retention of the --app's App (default: completed 7d, failed and cancelled 30d).",
)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(sorted(s.value for s in JOBS.final)),
    help="Only jobs in this finished state (repeatable; default: all three).",
)
@click.option("--dry-run", is_flag=True, help="Count what would go; change nothing.")
@app_option
@database_option
@json_option
@reports_errors
def prune(
    older_than: str | None,
    states: tuple[str, ...],
    dry_run: bool,
    app_ref: str | None,
    database: str | None,
    as_json: bool,
) -> None:
    """Delete finished jobs now, with their timelines, steps and awakeables. A job
    another waits on, a parent whose children remain, and a job whose events no
    worker has rolled up yet are kept."""
    period = None if older_than is None else parse_duration(older_than, "--older-than")
    with opened_app(database, app_ref) as app:
        report = app.prune(period, list(states) or None, dry_run=dry_run)
    counts = [
        {"queue": queue, "state": state.value, "jobs": n}
        for (queue, state), n in sorted(report.pruned.items())
    ]
    if as_json:
        print_json({"dry_run": dry_run, "pruned": report.total, "by_queue_and_state": counts})
        return
    verb = "would prune" if dry_run else "pruned"
    out.print(f"{verb} {report.total:,} finished job(s) of {report.scanned:,} read")
    for (queue, state), n in sorted(report.pruned.items()):
        out.print(f"  {printable(queue)}: {n:,} {state.value}")


COMMANDS: tuple[click.Command, ...] = (migrate, lifecycle, demo, prune)
