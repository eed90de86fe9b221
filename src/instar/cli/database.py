"""Commands about the database and the lifecycle as a whole: migrate the schema, draw the
lifecycle, run the demo tour."""

from __future__ import annotations

import sys
from typing import cast

import click

from instar.cli.common import database_option, opened_app, out, reports_errors
from instar.diagram import Format, render


@click.command()
@database_option
@reports_errors
def migrate(database: str | None) -> None:
    """Create or upgrade the schema (also done on first use)."""
    with opened_app(database) as app:
        version = app.migrate()
    out.print(f"schema of {app.database} is up to date (version {version})")


@click.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "mermaid", "dot"]),
    default="table",
    show_default=True,
)
def lifecycle(fmt: str) -> None:
    """Draw the job lifecycle from its one table."""
    click.echo(render(cast(Format, fmt)))


@click.command()
@database_option
@reports_errors
def demo(database: str | None) -> None:
    """Tour the lifecycle on a fresh database: retries, a cancel, a lost worker, a pause
    and resume, a signal, children and a dependency."""
    # Imported only here: the demo module is large and registers handlers of its own.
    from instar.demo import run_demo

    sys.exit(run_demo(database, out))


COMMANDS: tuple[click.Command, ...] = (migrate, lifecycle, demo)
