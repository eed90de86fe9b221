"""The ``instar worker`` command: wait for the database, run jobs until stopped or idle."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

import click

from instar.app import App
from instar.cli.common import app_option, database_option, err, opened_app, reports_errors
from instar.errors import ConfigurationError, DatabaseUnavailable, InvalidOption


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
    with opened_app(database, app_ref) as app:
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


COMMANDS: tuple[click.Command, ...] = (worker,)
