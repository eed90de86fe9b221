"""Commands on single jobs: create one, list them, show one, and the operator's verbs
(cancel, retry, pause, resume, stop).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

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
from instar.display import cell, current_phase, state_text, timeline_table
from instar.errors import ConfigurationError, InvalidOption
from instar.lifecycle import State
from instar.models import Job
from instar.schemas import AwakeableShape, EventShape, JobBriefShape, JobShape


@click.command()
@click.argument("name")
@app_option
@database_option
@click.option(
    "--args",
    "args_json",
    default="{}",
    help='Arguments as a JSON object, e.g. \'{"path": "a.png"}\'.',
)
@click.option("--delay", type=float, default=None, help="Start this many seconds from now.")
@click.option("--run-at", default=None, help="Start at this ISO 8601 time with a time zone.")
@click.option("--priority", type=int, default=None, help="Higher runs first.")
@click.option("--queue", default=None, help="Queue to put the job on (default: the job's own).")
@click.option("--key", default=None, help="Idempotency key: enqueue at most one job per key.")
@json_option
@reports_errors
def enqueue(
    name: str,
    app_ref: str | None,
    database: str | None,
    args_json: str,
    delay: float | None,
    run_at: str | None,
    priority: int | None,
    queue: str | None,
    key: str | None,
    as_json: bool,
) -> None:
    """Create a job for handler NAME."""
    if app_ref is None:
        raise ConfigurationError(
            "instar enqueue needs --app module:attribute to check the job name"
        )
    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as exc:
        raise InvalidOption(f"--args is not valid JSON: {exc}") from None
    if not isinstance(args, dict):
        raise InvalidOption("--args must be a JSON object of argument names to values")
    with opened_app(database, app_ref) as app:
        job = app.enqueue(
            name,
            args,
            delay=delay,
            run_at=_parse_time(run_at),
            priority=priority,
            queue=queue,
            key=key,
            actor="cli",
        )
    if as_json:
        print_json(JobShape.of(job).as_json())
    else:
        out.print(f"job {job.id} ({job.name}) is {job.state.value}")


@click.command()
@database_option
@click.option("--state", default=None, help="Only jobs in this state.")
@click.option("--queue", default=None, help="Only jobs on this queue.")
@click.option("--name", default=None, help="Only jobs of this handler.")
@click.option("--limit", default=100, show_default=True)
@json_option
@reports_errors
def jobs(
    database: str | None,
    state: str | None,
    queue: str | None,
    name: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List jobs, newest first."""
    with opened_app(database) as app:
        found = app.jobs(state=state, queue=queue, name=name, limit=limit)
    if as_json:
        print_json([JobShape.of(job).as_json() for job in found])
    else:
        out.print(_jobs_table(found))


@click.command()
@click.argument("job_id", type=int)
@database_option
@json_option
@reports_errors
def show(job_id: int, database: str | None, as_json: bool) -> None:
    """Every field of one job and its whole timeline."""
    with opened_app(database) as app:
        job = JobShape.of(app.get(job_id)).as_json()
        timeline = app.history(job_id)
        related = {
            "phase": current_phase(timeline),
            "awakeables": [AwakeableShape.of(a).as_json() for a in app.awakeables(job_id)],
            "children": [JobBriefShape.of(c).as_json() for c in app.children(job_id)],
            "dependencies": [JobBriefShape.of(d).as_json() for d in app.dependencies(job_id)],
        }
    if as_json:
        events = [EventShape.of(e).as_json() for e in timeline]
        print_json({"job": job, **related, "events": events})
        return
    fields = Table.grid(padding=(0, 2))
    for field, value in {**job, **related}.items():
        fields.add_row(field, cell(value))
    out.print(fields)
    out.print(timeline_table(timeline))


@click.command()
@click.argument("job_id", type=int)
@database_option
@reports_errors
def cancel(job_id: int, database: str | None) -> None:
    """Cancel a job (a running one is asked to stop)."""
    with opened_app(database) as app:
        job = app.cancel(job_id, actor="cli")
    if job.state is State.CANCELLED:
        out.print(f"job {job.id} cancelled")
    else:
        out.print(f"job {job.id} is {job.state.value}; its worker has been asked to cancel it")


@click.command()
@click.argument("job_id", type=int)
@database_option
@reports_errors
def retry(job_id: int, database: str | None) -> None:
    """Run a failed job again."""
    with opened_app(database) as app:
        job = app.retry(job_id, actor="cli")
    out.print(f"job {job.id} is {job.state.value} again")


@click.command()
@click.argument("job_id", type=int)
@database_option
@reports_errors
def pause(job_id: int, database: str | None) -> None:
    """Pause a job: at once if waiting, at its next checkpoint if running."""
    with opened_app(database) as app:
        job = app.pause(job_id, actor="cli")
    if job.state is State.PAUSED:
        out.print(f"job {job.id} paused")
    else:
        out.print(f"job {job.id} is {job.state.value}; it pauses at its next checkpoint")


@click.command()
@click.argument("job_id", type=int)
@database_option
@reports_errors
def resume(job_id: int, database: str | None) -> None:
    """Resume a paused job."""
    with opened_app(database) as app:
        job = app.resume(job_id, actor="cli")
    out.print(f"job {job.id} is {job.state.value}")


@click.command()
@click.argument("job_id", type=int)
@database_option
@reports_errors
def stop(job_id: int, database: str | None) -> None:
    """Ask a serving service job to stop (serving -> stopping -> completed)."""
    with opened_app(database) as app:
        job = app.stop(job_id, actor="cli")
    out.print(f"job {job.id} is {job.state.value}")


COMMANDS: tuple[click.Command, ...] = (enqueue, jobs, show, cancel, retry, pause, resume, stop)


def _jobs_table(found: list[Job]) -> Table:
    """One row per job, its state in the state's colour (``instar.display`` has no job list)."""
    table = Table("id", "name", "queue", "state", "attempt", "priority", "updated")
    for job in found:
        table.add_row(
            str(job.id),
            job.name,
            job.queue,
            state_text(job.state),
            f"{job.attempt}/{job.max_attempts}",
            str(job.priority),
            job.updated_at.isoformat(timespec="seconds"),
        )
    return table


def _parse_time(text: str | None) -> datetime | None:
    """``--run-at`` as an aware UTC time; a naive or malformed time is an InvalidOption."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidOption(
            f"--run-at {text!r} is not an ISO 8601 time, e.g. 2030-01-01T09:00:00+00:00"
        ) from None
    if moment.tzinfo is None:
        raise InvalidOption(f"--run-at {text!r} has no time zone; add one, e.g. +00:00 or Z")
    return moment.astimezone(UTC)
