"""The ``instar`` command: a thin shell over the App; it never touches SQL.

Every error Instar raises on purpose becomes one line on stderr and the exit
code that ``instar.errors.EXIT_CODES`` assigns to its type.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from instar.app import App
from instar.diagram import render
from instar.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    InstarError,
    InvalidOption,
)
from instar.lifecycle import State
from instar.models import Awakeable, Event, Job

F = TypeVar("F", bound=Callable[..., Any])

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

database_option = click.option(
    "--database",
    envvar="INSTAR_DATABASE",
    default=None,
    help="Database URL (sqlite:///path.db); default $INSTAR_DATABASE or ./instar.db.",
)
app_option = click.option(
    "--app",
    "app_ref",
    envvar="INSTAR_APP",
    default=None,
    help="Where your handlers are registered, as module:attribute (e.g. myproj.tasks:app).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def reports_errors(fn: F) -> F:
    """Turn Instar's errors into a message on stderr and a non-zero exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InstarError as error:
            err.print(f"[bold red]error:[/] {error}", markup=True)
            sys.exit(error.exit_code)

    return wrapper  # type: ignore[return-value]


def load_app(app_ref: str | None, database: str | None) -> App:
    """The user's App from ``module:attr`` (bound to ``database`` if given), or a bare one."""
    if app_ref is None:
        return App(database)
    module_name, _, attr = app_ref.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(
            f"--app {app_ref!r} must look like module:attribute, e.g. tasks:app"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot import {module_name!r} for --app {app_ref!r}: {exc}"
        ) from None
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise ConfigurationError(
            f"--app {app_ref!r}: {attr!r} in {module_name} is not an instar.App"
        )
    if database is not None:
        app.database = database
    return app


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="instar")
def cli() -> None:
    """Instar: durable jobs with an explicit lifecycle."""


@cli.command()
@app_option
@database_option
@click.option(
    "--queue", "queues", multiple=True, help="Queue to take jobs from (repeatable); default all."
)
@click.option("--concurrency", default=10, show_default=True, help="Jobs run at once.")
@click.option("--burst", is_flag=True, help="Exit once nothing is ready or due.")
@click.option(
    "--shutdown-grace", default=10.0, show_default=True, help="Seconds running jobs get on SIGTERM."
)
@reports_errors
def worker(
    app_ref: str | None,
    database: str | None,
    queues: tuple[str, ...],
    concurrency: int,
    burst: bool,
    shutdown_grace: float,
) -> None:
    """Run jobs. SIGINT/SIGTERM: stop claiming, finish or release running jobs."""
    if app_ref is None:
        raise ConfigurationError("instar worker needs --app module:attribute to find your handlers")
    if concurrency < 1:
        raise InvalidOption(f"--concurrency must be at least 1, got {concurrency}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = load_app(app_ref, database)
    _wait_for_database(app)
    report = app.run_worker(
        queues or None, concurrency=concurrency, burst=burst, shutdown_grace=shutdown_grace
    )
    err.print(
        f"worker done: {report.completed} completed, {report.failed} failed, "
        f"{report.released} released, {report.refused} refused"
    )
    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        # A sync handler still runs in a thread after its job was released; its
        # result would be refused anyway, so do not wait for it to exit.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _wait_for_database(app: App) -> None:
    """A worker started before its database is up waits for it, with backoff,
    saying so in its log; every other command fails at once instead."""
    delay = 0.5
    while True:
        try:
            app.migrate()
            return
        except DatabaseUnavailable as exc:
            logging.getLogger("instar.worker").warning("%s; trying again in %.1fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


@cli.command()
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
    app = load_app(app_ref, database)
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
        out.print_json(json.dumps(job_dict(job)))
    else:
        out.print(f"job {job.id} ({job.name}) is {job.state.value}")


@cli.command()
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
    found = App(database).jobs(state=state, queue=queue, name=name, limit=limit)
    if as_json:
        out.print_json(json.dumps([job_dict(j) for j in found]))
        return
    table = Table("id", "name", "queue", "state", "attempt", "priority", "updated")
    for job in found:
        table.add_row(
            str(job.id),
            job.name,
            job.queue,
            job.state.value,
            f"{job.attempt}/{job.max_attempts}",
            str(job.priority),
            job.updated_at.isoformat(timespec="seconds"),
        )
    out.print(table)


@cli.command()
@click.argument("job_id", type=int)
@database_option
@json_option
@reports_errors
def show(job_id: int, database: str | None, as_json: bool) -> None:
    """Every field of one job and its whole timeline."""
    app = App(database)
    job = app.get(job_id)
    timeline = app.history(job_id)
    related = {
        "phase": current_phase(timeline),
        "awakeables": [awakeable_dict(a) for a in app.awakeables(job_id)],
        "children": [brief(c) for c in app.children(job_id)],
        "dependencies": [brief(d) for d in app.dependencies(job_id)],
    }
    if as_json:
        document = {"job": job_dict(job), **related, "events": [event_dict(e) for e in timeline]}
        out.print_json(json.dumps(document))
        return
    fields = Table.grid(padding=(0, 2))
    for field, value in {**job_dict(job), **related}.items():
        fields.add_row(field, _text(value))
    out.print(fields)
    out.print(timeline_table(timeline))


@cli.command()
@click.argument("job_id", type=int)
@database_option
@reports_errors
def cancel(job_id: int, database: str | None) -> None:
    """Cancel a job (a running one is asked to stop)."""
    job = App(database).cancel(job_id, actor="cli")
    if job.state is State.CANCELLED:
        out.print(f"job {job.id} cancelled")
    else:
        out.print(f"job {job.id} is {job.state.value}; its worker has been asked to cancel it")


@cli.command()
@click.argument("job_id", type=int)
@database_option
@reports_errors
def retry(job_id: int, database: str | None) -> None:
    """Run a failed job again."""
    job = App(database).retry(job_id, actor="cli")
    out.print(f"job {job.id} is {job.state.value} again")


@cli.command()
@click.argument("job_id", type=int)
@database_option
@reports_errors
def pause(job_id: int, database: str | None) -> None:
    """Pause a job: at once if waiting, at its next checkpoint if running."""
    job = App(database).pause(job_id, actor="cli")
    if job.state is State.PAUSED:
        out.print(f"job {job.id} paused")
    else:
        out.print(f"job {job.id} is {job.state.value}; it pauses at its next checkpoint")


@cli.command()
@click.argument("job_id", type=int)
@database_option
@reports_errors
def resume(job_id: int, database: str | None) -> None:
    """Resume a paused job."""
    job = App(database).resume(job_id, actor="cli")
    out.print(f"job {job.id} is {job.state.value}")


@cli.command()
@click.argument("job_id", type=int)
@database_option
@reports_errors
def stop(job_id: int, database: str | None) -> None:
    """Ask a serving service job to stop (serving -> stopping -> completed)."""
    job = App(database).stop(job_id, actor="cli")
    out.print(f"job {job.id} is {job.state.value}")


@cli.command()
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
    awakeable = App(database).resolve(awakeable_id, value, actor="cli")
    out.print(f"awakeable {awakeable.id} ({awakeable.name}) of job {awakeable.job_id} resolved")


@cli.command()
@click.argument("awakeable_id")
@database_option
@click.option("--reason", required=True, help="Why the signal is refused.")
@reports_errors
def reject(awakeable_id: str, database: str | None, reason: str) -> None:
    """Reject an awakeable: the waiting job gets SignalRejected(reason)."""
    awakeable = App(database).reject(awakeable_id, reason, actor="cli")
    out.print(f"awakeable {awakeable.id} ({awakeable.name}) of job {awakeable.job_id} rejected")


@cli.command()
@database_option
@json_option
@reports_errors
def queues(database: str | None, as_json: bool) -> None:
    """Every queue: counts by state, and whether it is paused."""
    stats = App(database).queues()
    if as_json:
        rows = [
            {
                "queue": q.queue,
                "paused": q.paused,
                "counts": {state.value: n for state, n in q.counts.items()},
            }
            for q in stats
        ]
        out.print_json(json.dumps(rows))
        return
    states = [state for state in State if any(state in q.counts for q in stats)]
    table = Table("queue", "paused", *(state.value for state in states))
    for q in stats:
        table.add_row(
            q.queue, "yes" if q.paused else "", *(str(q.counts.get(state, 0)) for state in states)
        )
    out.print(table)


@cli.command("pause-queue")
@click.argument("queue")
@database_option
@reports_errors
def pause_queue(queue: str, database: str | None) -> None:
    """Claim nothing more from QUEUE until it is resumed (running jobs go on)."""
    App(database).pause_queue(queue)
    out.print(f"queue {queue} paused")


@cli.command("resume-queue")
@click.argument("queue")
@database_option
@reports_errors
def resume_queue(queue: str, database: str | None) -> None:
    """Let workers claim from QUEUE again."""
    App(database).resume_queue(queue)
    out.print(f"queue {queue} resumed")


@cli.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "mermaid", "dot"]),
    default="table",
    show_default=True,
)
def lifecycle(fmt: str) -> None:
    """Draw the job lifecycle from its one table."""
    click.echo(render(fmt))  # type: ignore[arg-type]


@cli.command()
@database_option
@reports_errors
def migrate(database: str | None) -> None:
    """Create or upgrade the schema (also done on first use)."""
    app = App(database)
    version = app.migrate()
    out.print(f"schema of {app.database} is up to date (version {version})")


@cli.command()
@database_option
@reports_errors
def demo(database: str | None) -> None:
    """Tour the lifecycle on a fresh database: retries, a cancel, a lost worker, a pause
    and resume, a signal, children and a dependency."""
    from instar.demo import run_demo

    sys.exit(run_demo(database, out))


# -- rendering ---------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def job_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "queue": job.queue,
        "state": job.state.value,
        "priority": job.priority,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "args": job.args,
        "result": job.result,
        "error": job.error,
        "key": job.key,
        "run_at": _iso(job.run_at),
        "next_retry_at": _iso(job.next_retry_at),
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "worker": job.worker,
        "progress": None
        if job.progress is None
        else {
            "current": job.progress.current,
            "total": job.progress.total,
            "message": job.progress.message,
        },
        "lease_expires_at": _iso(job.lease_expires_at),
        "cancel_requested": job.cancel_requested,
        "pause_requested": job.pause_requested,
        "checkpoint": job.checkpoint,
        "wake_at": _iso(job.wake_at),
        "pause_deadline": _iso(job.pause_deadline),
        "parent_id": job.parent_id,
    }


def brief(job: Job) -> dict[str, Any]:
    return {"id": job.id, "name": job.name, "state": job.state.value}


def current_phase(timeline: list[Event]) -> str | None:
    """The phase the latest run last reported (phases live in the timeline only)."""
    phase = None
    for event in timeline:
        if event.trigger == "claimed":
            phase = None
        elif event.trigger == "phase" and isinstance(event.detail, dict):
            phase = event.detail.get("phase")
    return phase


def awakeable_dict(awakeable: Awakeable) -> dict[str, Any]:
    return {
        "id": awakeable.id,
        "name": awakeable.name,
        "state": awakeable.state,
        "value": awakeable.value,
        "reason": awakeable.reason,
        "timeout_at": _iso(awakeable.timeout_at),
    }


def event_dict(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "job_id": event.job_id,
        "at": _iso(event.at),
        "from_state": None if event.from_state is None else event.from_state.value,
        "to_state": event.to_state.value,
        "trigger": event.trigger,
        "attempt": event.attempt,
        "worker": event.worker,
        "actor": event.actor,
        "detail": event.detail,
    }


def timeline_table(events: list[Event]) -> Table:
    table = Table(
        "event", "at (UTC)", "from", "to", "trigger", "attempt", "worker", "actor", "detail"
    )
    for e in events:
        detail = e.detail
        if isinstance(detail, dict) and "traceback" in detail:
            detail = {k: v for k, v in detail.items() if k != "traceback"}
        table.add_row(
            str(e.id),
            e.at.strftime("%H:%M:%S.%f")[:-3],
            "" if e.from_state is None else e.from_state.value,
            e.to_state.value,
            e.trigger,
            str(e.attempt),
            e.worker or "",
            e.actor or "",
            "" if detail is None else json.dumps(detail),
        )
    return table


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _parse_time(text: str | None) -> datetime | None:
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


def main() -> None:
    cli(prog_name="instar")


if __name__ == "__main__":
    main()
