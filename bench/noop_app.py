"""Handlers that do nothing, so the benchmark measures Instar and not the jobs.

Job names are fixed (``noop``, ``noop_sync``, ``stamp``) so the bench process
and the worker subprocess agree on them however this module is imported.
"""

from __future__ import annotations

import os
import time

from instar import App


async def noop() -> None:
    """An async handler: runs as a task on the worker's event loop."""


def noop_sync() -> None:
    """A sync handler: runs in the worker's thread pool, so it measures that hop too."""


def stamp(sent: float) -> None:
    """A sync no-op that appends ``<sent> <started>`` to $INSTAR_BENCH_STAMPS, for
    the pickup latency: ``sent`` is ``time.time()`` just before the enqueue call."""
    started = time.time()
    with open(os.environ["INSTAR_BENCH_STAMPS"], "a") as out:
        out.write(f"{sent!r} {started!r}\n")


def make_app(database: str | None = None) -> App:
    """A fresh App on ``database`` with the handlers; one per benchmark database."""
    app = App(database)
    app.job(name="noop")(noop)
    app.job(name="noop_sync")(noop_sync)
    app.job(name="stamp")(stamp)
    return app


# What ``instar worker --app bench.noop_app:app --database ...`` loads.
app = make_app()
