"""Commands on single jobs: create one, list them, show one, and the operator's verbs
(cancel, retry, pause, resume, stop).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from datetime import UTC, datetime

import click
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from instar.app import App
from instar.cli.common import (
    app_option,
    database_option,
    job_id,
    json_option,
    opened_app,
    out,
    print_json,
    printable,
    read_json,
    reports_errors,
)
from instar.display import (
    current_phase,
    error_fields,
    fields_table,
    state_text,
    timeline_table,
)
from instar.errors import ConfigurationError, InvalidOption
from instar.lifecycle import State, is_leased, is_terminal
from instar.models import Job
from instar.registry.limits import MAX_LIST, check_limit
from instar.schemas import AwakeableShape, EventShape, JobBriefShape, JobShape


@click.command()
@click.argument("name")
@app_option
@database_option
@click.option(
    "--args",
    "args_json",
    default="{}",
    help=(
        'Arguments as a JSON object, e.g. \'{"path": "a.png"}\'; @FILE reads them from a '
        "file, - from standard input."
    ),
)
@click.option(
    "--delay", type=float, default=None, help="Start this many seconds from now (0 to 3650 days)."
)
@click.option("--run-at", default=None, help="Start at this ISO 8601 time with a time zone.")
@click.option(
    "--priority", type=int, default=None, help="Higher runs first (a 32-bit signed integer)."
)
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
    args = read_json(args_json, "--args")
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
@click.option(
    "--limit",
    type=int,
    default=100,
    show_default=True,
    help=f"At most this many (1 to {MAX_LIST:,}).",
)
@click.option(
    "--before",
    callback=job_id,
    default=None,
    help="Only jobs older than job ID: the next page starts before the last id shown.",
)
@json_option
@reports_errors
def jobs(
    database: str | None,
    state: str | None,
    queue: str | None,
    name: str | None,
    limit: int,
    before: int | None,
    as_json: bool,
) -> None:
    """List jobs, newest first, a page at a time."""
    check_limit(limit)
    with opened_app(database, read_only=True) as app:
        fetched = app.jobs(
            state=state, queue=queue, name=name, limit=min(limit + 1, MAX_LIST), before=before
        )
        found = fetched[:limit]
        total = None if as_json else _total(app, state, queue, name)
        known = {h for w in app.live_workers() for h in w.handlers} if not as_json else set()
    if as_json:
        print_json([JobShape.of(job).as_json() for job in found])
        return
    if found:
        out.print(_jobs_table(found, datetime.now(UTC)))
    more = len(fetched) > limit or len(found) == MAX_LIST
    filters = {"state": state, "queue": queue, "name": name}
    out.print(_page_line(found, total, before, filters if more else None))
    orphans = sorted(
        {
            job.name
            for job in found
            if not is_terminal(job.state) and not is_leased(job.state) and job.name not in known
        }
    )
    if orphans:
        names = ", ".join(escape(printable(n)) for n in orphans)
        out.print(f"[yellow]no live worker has a handler for: {names}[/]")


@click.command()
@click.argument("job_id", callback=job_id)
@database_option
@json_option
@reports_errors
def show(job_id: int, database: str | None, as_json: bool) -> None:
    """Every field of one job and its whole timeline."""
    with opened_app(database, read_only=True) as app:
        job = app.get(job_id)
        timeline = app.history(job_id)
        awakeables = app.awakeables(job_id)
        children = app.children(job_id)
        dependencies = app.dependencies(job_id)
        now = datetime.fromtimestamp(app.clock.now(), UTC)
        runners = [w.id for w in app.live_workers() if job.name in w.handlers]
    waits_for_a_worker = not is_terminal(job.state) and not is_leased(job.state)
    if as_json:
        print_json(
            {
                "job": JobShape.of(job).as_json(),
                "live_workers_with_its_handler": runners,
                "phase": current_phase(timeline),
                "awakeables": [AwakeableShape.of(a).as_json() for a in awakeables],
                "children": [JobBriefShape.of(c).as_json() for c in children],
                "dependencies": [JobBriefShape.of(d).as_json() for d in dependencies],
                "events": [EventShape.of(e).as_json() for e in timeline],
            }
        )
        return
    fields: dict[str, object] = {}
    for name in JobShape.model_fields:
        if name == "error":
            fields.update(error_fields(job.error))
        else:
            fields[name] = getattr(job, name)
    fields["phase"] = current_phase(timeline)
    fields["awakeables"] = "\n".join(f"{a.id} {a.name} {a.state}" for a in awakeables) or None
    fields["children"] = "\n".join(f"#{c.id} {c.name} {c.state}" for c in children) or None
    fields["dependencies"] = "\n".join(f"#{d.id} {d.name} {d.state}" for d in dependencies) or None
    out.print(fields_table(fields, now))
    out.print()
    out.print(timeline_table(timeline, now))
    if waits_for_a_worker and not runners:
        out.print(
            f"[yellow]no live worker has a handler for {escape(printable(job.name))}[/]: it waits "
            "until one runs (instar worker --app module:app)"
        )


def _verb(
    name: str, help_text: str, act: Callable[[App, int], Job], say: Callable[[Job], str]
) -> click.Command:
    """A command that applies one operator verb to one job and prints the job after it."""

    @click.command(name=name, help=help_text)
    @click.argument("job_id", callback=job_id)
    @database_option
    @json_option
    @reports_errors
    def command(job_id: int, database: str | None, as_json: bool) -> None:
        with opened_app(database) as app:
            job = act(app, job_id)
        if as_json:
            print_json(JobShape.of(job).as_json())
        else:
            out.print(say(job))

    return command


def _said_cancel(job: Job) -> str:
    if job.state is State.CANCELLED:
        return f"job {job.id} cancelled"
    return f"job {job.id} is {job.state.value}; its worker has been asked to cancel it"


def _said_pause(job: Job) -> str:
    if job.state is State.PAUSED:
        return f"job {job.id} paused"
    return f"job {job.id} is {job.state.value}; it pauses at its next checkpoint"


cancel = _verb(
    "cancel",
    "Cancel a job (a running one is asked to stop).",
    lambda app, job_id: app.cancel(job_id, actor="cli"),
    _said_cancel,
)
retry = _verb(
    "retry",
    "Run a failed job again.",
    lambda app, job_id: app.retry(job_id, actor="cli"),
    lambda job: f"job {job.id} is {job.state.value} again",
)
pause = _verb(
    "pause",
    "Pause a job: at once if waiting, at its next checkpoint if running.",
    lambda app, job_id: app.pause(job_id, actor="cli"),
    _said_pause,
)
resume = _verb(
    "resume",
    "Resume a paused job.",
    lambda app, job_id: app.resume(job_id, actor="cli"),
    lambda job: f"job {job.id} is {job.state.value}",
)
stop = _verb(
    "stop",
    "Ask a serving service job to stop (serving -> stopping -> completed).",
    lambda app, job_id: app.stop(job_id, actor="cli"),
    lambda job: f"job {job.id} is {job.state.value}",
)


COMMANDS: tuple[click.Command, ...] = (enqueue, jobs, show, cancel, retry, pause, resume, stop)


def _total(app: App, state: str | None, queue: str | None, name: str | None) -> int | None:
    """How many jobs match the filter in all, where the counts can tell (not by name)."""
    if name is not None:
        return None
    wanted = None if state is None else State(state)
    if queue is None:
        counts = app.counts()
    else:
        counts = next((q.counts for q in app.queues() if q.queue == queue), {})
    return sum(counts.values()) if wanted is None else counts.get(wanted, 0)


def _page_line(
    found: list[Job],
    total: int | None,
    before: int | None,
    next_page: dict[str, str | None] | None,
) -> Text:
    """``showing 100 of 2,000 jobs, newest first; next page: instar jobs --before 1901``
    (``total`` None: not counted; ``next_page``: the filters, when more jobs follow)."""
    older = f" older than job {before}" if before is not None else ""
    if not found:
        return Text(f"no jobs{older}", style="dim")
    of = f" of {total:,}" if total is not None else ""
    line = f"showing {len(found):,}{of} jobs{older}, newest first"
    if next_page is not None:
        options = "".join(
            f" --{option} {shlex.quote(value)}"
            for option, value in next_page.items()
            if value is not None
        )
        line += f"; next page: instar jobs{options} --before {found[-1].id}"
    return Text(line, style="dim")


def _jobs_table(found: list[Job], now: datetime) -> Table:
    """One row per job, its state in the state's colour; fits 80 columns."""
    table = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("name", overflow="fold", ratio=2)
    table.add_column("queue", overflow="fold", ratio=1)
    table.add_column("state", no_wrap=True)
    table.add_column("try", no_wrap=True, justify="right")
    table.add_column("prio", no_wrap=True, justify="right")
    table.add_column("updated (UTC)", no_wrap=True)
    for job in found:
        updated = job.updated_at.astimezone(UTC)
        stamp = "%H:%M:%S" if updated.date() == now.date() else "%Y-%m-%d %H:%M"
        table.add_row(
            str(job.id),
            job.name,
            job.queue,
            state_text(job.state),
            f"{job.attempt}/{job.max_attempts}",
            str(job.priority),
            updated.strftime(stamp),
        )
    return table


def _parse_time(text: str | None) -> datetime | None:
    """``--run-at`` as an aware time; a naive or malformed time is an InvalidOption."""
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
    return moment
