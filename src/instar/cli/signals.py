"""Commands that answer an awakeable a job waits on: resolve it with a value, or reject it."""

from __future__ import annotations

import click

from instar.cli.common import (
    database_option,
    json_option,
    opened_app,
    out,
    print_json,
    read_json,
    reports_errors,
)
from instar.registry.limits import MAX_NAME_BYTES, check_text
from instar.schemas import AwakeableShape


@click.command()
@click.argument("awakeable_id")
@database_option
@click.option(
    "--value",
    "value_json",
    default="null",
    help="The signal's value as JSON; @FILE reads it from a file, - from standard input.",
)
@json_option
@reports_errors
def resolve(awakeable_id: str, database: str | None, value_json: str, as_json: bool) -> None:
    """Resolve an awakeable: the job waiting on it gets VALUE."""
    check_text(awakeable_id, "awakeable id", max_bytes=MAX_NAME_BYTES)
    value = read_json(value_json, "--value")
    with opened_app(database) as app:
        awakeable = app.resolve(awakeable_id, value, actor="cli")
    if as_json:
        print_json(AwakeableShape.of(awakeable).as_json())
    else:
        out.print(f"awakeable {awakeable.id} ({awakeable.name}) of job {awakeable.job_id} resolved")


@click.command()
@click.argument("awakeable_id")
@database_option
@click.option("--reason", required=True, help="Why the signal is refused.")
@json_option
@reports_errors
def reject(awakeable_id: str, database: str | None, reason: str, as_json: bool) -> None:
    """Reject an awakeable: the waiting job gets SignalRejected(reason)."""
    check_text(awakeable_id, "awakeable id", max_bytes=MAX_NAME_BYTES)
    with opened_app(database) as app:
        awakeable = app.reject(awakeable_id, reason, actor="cli")
    if as_json:
        print_json(AwakeableShape.of(awakeable).as_json())
    else:
        out.print(f"awakeable {awakeable.id} ({awakeable.name}) of job {awakeable.job_id} rejected")


COMMANDS: tuple[click.Command, ...] = (resolve, reject)
