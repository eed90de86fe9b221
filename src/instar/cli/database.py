"""Commands about the database and the lifecycle as a whole: migrate the schema, draw the
lifecycle, run the demo tour."""

from __future__ import annotations

import sys
from typing import cast

import click

from instar.cli.common import (
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


COMMANDS: tuple[click.Command, ...] = (migrate, lifecycle, demo)
