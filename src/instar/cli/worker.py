"""The ``instar worker`` command: wait for the database, run jobs until stopped or idle,
and log one line as each job starts and one as it ends."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import threading
import time
from datetime import datetime

import click

from instar.app import App
from instar.cli.common import (
    app_option,
    database_option,
    err,
    json_option,
    opened_app,
    print_json,
    reports_errors,
    setup_logging,
)
from instar.display import duration
from instar.errors import ConfigurationError, DatabaseUnavailable, InstarError, InvalidOption
from instar.lifecycle import State, is_leased
from instar.models import Event
from instar.store.urls import redact
from instar.vocabulary import Trigger

log = logging.getLogger("instar.worker")

MAX_CONCURRENCY = 10_000
"""The most jobs one worker runs at once."""

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
LOG_DATES = "%Y-%m-%d %H:%M:%S"


@click.command()
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
@click.option("--quiet", is_flag=True, help="No line per job; only warnings and the report.")
@json_option
@reports_errors
def worker(
    app_ref: str | None,
    database: str | None,
    queues: tuple[str, ...],
    concurrency: int,
    burst: bool,
    shutdown_grace: float,
    quiet: bool,
    as_json: bool,
) -> None:
    """Run jobs. SIGINT/SIGTERM: stop claiming, finish or release running jobs.

    Logs one line when a job starts (name, id, attempt) and one when its run ends
    (how, after how long, and the error's type and message if it failed); --json
    prints the final report as JSON on stdout."""
    if app_ref is None:
        raise ConfigurationError("instar worker needs --app module:attribute to find your handlers")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InvalidOption(
            f"--concurrency must be from 1 to {MAX_CONCURRENCY:,}, got {concurrency}"
        )
    if not math.isfinite(shutdown_grace) or shutdown_grace < 0:
        raise InvalidOption(
            f"--shutdown-grace must be a finite number of seconds, 0 or more; got {shutdown_grace}"
        )
    setup_logging(logging.WARNING if quiet else logging.INFO, LOG_FORMAT, LOG_DATES)
    with opened_app(database, app_ref) as app:
        log.info("database %s (%s)", redact(app.database), app.database_source)
        _wait_for_database(app)
        runner = app.worker(
            queues or None, concurrency=concurrency, burst=burst, shutdown_grace=shutdown_grace
        )
        job_log = None if quiet else JobLog(app, runner.id)
        try:
            report = asyncio.run(runner.run())
        finally:
            if job_log is not None:
                job_log.close()
    if as_json:
        print_json(
            {
                "worker": runner.id,
                "completed": report.completed,
                "failed": report.failed,
                "released": report.released,
                "refused": report.refused,
                "by_state": report.by_state,
            }
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


class JobLog:
    """One log line as each job this worker claims starts, and one as its run ends,
    read from the event feed in a thread of its own (the worker is not slowed, and
    the lines say what the timeline recorded). Costs one read of the job per claim,
    for its name; ``--quiet`` turns it off."""

    FOLLOW_SLICE = 0.5
    """Seconds each follow of the feed lasts before the thread checks for the end."""

    def __init__(self, app: App, worker_id: str) -> None:
        self.app = app
        self.worker_id = worker_id
        self.cursor = app.last_event_id()
        self.runs: dict[int, tuple[str, datetime, int]] = {}  # job id: name, start, attempts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="instar-job-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Log what the worker's last batch recorded, then stop following."""
        self._stop.set()
        self._thread.join(timeout=5 * self.FOLLOW_SLICE)

    def _follow(self) -> None:
        try:
            while not self._stop.is_set():
                self._read(follow=True)
            self._read(follow=False)
        except InstarError as exc:  # the worker itself reports database trouble
            log.warning("per-job log lines stopped: %s", exc)

    def _read(self, *, follow: bool) -> None:
        timeout = self.FOLLOW_SLICE if follow else None
        for event in self.app.events(after=self.cursor, follow=follow, timeout=timeout):
            self.cursor = event.id
            self.tell(event)
            if follow and self._stop.is_set():
                return

    def tell(self, event: Event) -> None:
        """The line ``event`` calls for, if it starts or ends a run of this worker."""
        if event.trigger == Trigger.CLAIMED and event.worker == self.worker_id:
            try:
                job = self.app.get(event.job_id)
            except InstarError:
                return
            self.runs[event.job_id] = (job.name, event.at, job.max_attempts)
            log.info(
                "job %d %s started (attempt %d/%d)",
                event.job_id,
                job.name,
                event.attempt,
                job.max_attempts,
            )
            return
        run = self.runs.get(event.job_id)
        if run is None or event.from_state is None or event.from_state == event.to_state:
            return
        if not is_leased(event.from_state) or is_leased(event.to_state):
            if event.to_state is State.SERVING:
                log.info("job %d %s is serving", event.job_id, run[0])
            return
        name, started, attempts = run
        del self.runs[event.job_id]
        took = duration((event.at - started).total_seconds())
        level, words = _run_end(event, took, attempts)
        log.log(level, "job %d %s %s", event.job_id, name, words)


def _run_end(event: Event, took: str, attempts: int) -> tuple[int, str]:
    """How a run ended, in words, and the level to log it at."""
    detail = event.detail if isinstance(event.detail, dict) else {}
    error = ""
    if "message" in detail:
        message = " ".join(str(detail["message"]).split())
        if len(message) > 200:
            message = message[:199] + "…"
        error = f": {detail.get('type', 'error')}: {message}"
    attempt = f"attempt {event.attempt}/{attempts}"
    match event.to_state:
        case State.COMPLETED:
            return logging.INFO, f"completed in {took}"
        case State.BACKING_OFF:
            return logging.WARNING, f"failed after {took} ({attempt}), will retry{error}"
        case State.FAILED:
            return logging.ERROR, f"failed after {took} ({attempt}){error}"
        case State.SUSPENDED:
            return logging.INFO, f"suspended after {took} (its worker is freed)"
        case State.PAUSED:
            why = " (retries exhausted)" if event.trigger == Trigger.RETRIES_EXHAUSTED else ""
            return logging.WARNING if why else logging.INFO, f"paused after {took}{why}{error}"
        case State.CANCELLED:
            return logging.INFO, f"cancelled after {took}"
        case State.READY:
            return logging.INFO, f"released after {took} (attempt not counted)"
        case State.ORPHANED:
            return logging.WARNING, f"lost its lease after {took}"
        case _:
            return logging.INFO, f"{event.to_state.value} after {took}"


def _wait_for_database(app: App) -> None:
    """A worker started before its database is up waits for it, with backoff,
    saying so in its log; every other command fails at once instead."""
    delay = 0.5
    while True:
        try:
            app.migrate()
            return
        except DatabaseUnavailable as exc:
            log.warning("%s; trying again in %.1fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


COMMANDS: tuple[click.Command, ...] = (worker,)
