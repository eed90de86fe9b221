"""Commands that answer an awakeable a job waits on: resolve it with a value, or reject it."""

from __future__ import annotations

import json

import click

from instar.cli.common import database_option, opened_app, out, reports_errors
from instar.errors import InvalidOption


@click.command()
@click.argument("awakeable_id")
@database_option
@click.option("--value", "value_json", default="null", help="The signal's value as JSON.")
@reports_errors
def resolve(awakeable_id: str, database: str | None, value_json: str) -> None:
    """Resolve an awakeable: the job waiting on it gets VALUE."""
    try:
        value = json.loads(value_json)
    except json.JSONDecodeError as exc:
        raise InvalidOption(f"--value is not valid JSON: {exc}") from None
    with opened_app(database) as app:
        awakeable = app.resolve(awakeable_id, value, actor="cli")
    out.print(f"awakeable {awakeable.id} ({awakeable.name}) of job {awakeable.job_id} resolved")


@click.command()
@click.argument("awakeable_id")
@database_option
@click.option("--reason", required=True, help="Why the signal is refused.")
@reports_errors
def reject(awakeable_id: str, database: str | None, reason: str) -> None:
    """Reject an awakeable: the waiting job gets SignalRejected(reason)."""
    with opened_app(database) as app:
        awakeable = app.reject(awakeable_id, reason, actor="cli")
    out.print(f"awakeable {awakeable.id} ({awakeable.name}) of job {awakeable.job_id} rejected")


COMMANDS: tuple[click.Command, ...] = (resolve, reject)
