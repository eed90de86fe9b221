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
from typing import Any

import click

from instar.app import App
from instar.cli.common import (
    JsonFormatter,
    app_option,
    database_option,
    json_option,
    opened_app,
    print_json,
    reports_errors,
    setup_logging,
)
from instar.errors import ConfigurationError, DatabaseUnavailable, InvalidOption
from instar.store.urls import redact
from instar.worker.loop import WorkerReport
from instar.worker.observer import RunObserver
from instar.worker.processes import exit_code, run_processes

log = logging.getLogger("instar.worker")

MAX_CONCURRENCY = 10_000
"""The most jobs one worker runs at once."""

MAX_PROCESSES = 256
"""The most worker processes one command forks."""

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
LOG_DATES = "%Y-%m-%d %H:%M:%S"


@click.command()
@app_option
@database_option
@click.option(
    "--queue", "queues", multiple=True, help="Queue to take jobs from (repeatable); default all."
)
@click.option("--concurrency", default=10, show_default=True, help="Jobs run at once.")
@click.option(
    "--processes",
    default=1,
    show_default=True,
    help="Worker processes, forked once the app is imported and the database migrated; "
    "each runs --concurrency jobs at once.",
)
@click.option("--burst", is_flag=True, help="Exit once nothing is ready or due.")
@click.option(
    "--shutdown-grace", default=10.0, show_default=True, help="Seconds running jobs get on SIGTERM."
)
@click.option("--quiet", is_flag=True, help="No line per job; only warnings and the report.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per line (time, level, logger, message, and the job's "
    "fields on its lines), for log shippers.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (needs instar[metrics]); "
    "with --processes N, process i serves them at PORT + i.",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics listen on (0.0.0.0: every interface).",
)
@json_option
@reports_errors
def worker(
    app_ref: str | None,
    database: str | None,
    queues: tuple[str, ...],
    concurrency: int,
    processes: int,
    burst: bool,
    shutdown_grace: float,
    quiet: bool,
    log_format: str,
    metrics_port: int | None,
    metrics_host: str,
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
    if not 1 <= processes <= MAX_PROCESSES:
        raise InvalidOption(f"--processes must be from 1 to {MAX_PROCESSES}, got {processes}")
    if metrics_port is not None and metrics_port + processes - 1 > 65535:
        raise InvalidOption(
            f"--metrics-port {metrics_port} with --processes {processes} would need ports up to "
            f"{metrics_port + processes - 1}; the highest is 65535"
        )
    level = logging.WARNING if quiet else logging.INFO
    setup_logging(level, LOG_FORMAT, LOG_DATES, as_json=log_format == "json")

    def work(index: int) -> dict[str, Any]:
        observer = None
        if metrics_port is not None:
            observer = _serve_metrics(app, metrics_host, metrics_port + index)
        runner = app.worker(
            queues or None,
            concurrency=concurrency,
            burst=burst,
            shutdown_grace=shutdown_grace,
            observer=observer,
        )
        report = asyncio.run(runner.run())
        return {"worker": runner.id, **report_counts(report)}

    with opened_app(database, app_ref) as app:
        log.info("database %s (%s)", redact(app.database), app.database_source)
        _wait_for_database(app)
        if processes == 1:
            summary = work(0)
            code = 0
        else:
            app.close()  # no connection and no thread may cross the fork
            ends = run_processes(processes, reports_errors(work), burst=burst)
            code = exit_code(ends)
            reports = [end.report for end in ends if end.report is not None]
            summary = {"workers": [report["worker"] for report in reports], **_sum(reports)}
    if as_json:
        print_json(summary)
    done = (
        f"worker done: {summary['completed']} completed, {summary['failed']} failed, "
        f"{summary['released']} released, {summary['refused']} refused"
    )
    if log_format == "json":  # every line on stderr is JSON
        record = logging.makeLogRecord({"name": log.name, "levelname": "INFO", "msg": done})
        sys.stderr.write(JsonFormatter().format(record) + "\n")
    else:
        click.echo(done, err=True)
    if code:
        sys.exit(code)
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


COUNTS = ("completed", "failed", "released", "refused")
"""The counts of a worker's report, in the order its last line gives them."""


def report_counts(report: WorkerReport) -> dict[str, Any]:
    """A report as JSON: the counts, then ``by_state`` (moves made, by the state reached)."""
    return {**{name: getattr(report, name) for name in COUNTS}, "by_state": report.by_state}


def _sum(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Several processes' reports added up."""
    by_state: dict[str, int] = {}
    for report in reports:
        for state, n in report["by_state"].items():
            by_state[state] = by_state.get(state, 0) + n
    totals = {name: sum(report[name] for report in reports) for name in COUNTS}
    return {**totals, "by_state": by_state}


def _serve_metrics(app: App, host: str, port: int) -> RunObserver:
    """Start serving the metrics; ``ConfigurationError`` without prometheus_client."""
    try:
        from instar.metrics import serve_worker_metrics
    except ImportError:
        raise ConfigurationError(
            "--metrics-port needs prometheus_client: pip install 'instar[metrics]'"
        ) from None
    observer = serve_worker_metrics(app, host, port)
    log.info("metrics at %s", observer.url)
    return observer


def _wait_for_database(app: App) -> None:
    """A worker started before its database is up waits for it, with backoff,
    saying so in its log; every other command fails at once instead."""
    delay = 0.5
    while True:
        try:
            app.engine  # opening it migrates  # noqa: B018
            return
        except DatabaseUnavailable as exc:
            log.warning("%s; trying again in %.1fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


COMMANDS: tuple[click.Command, ...] = (worker,)
