"""Handlers that do nothing, so the benchmark measures Instar and not the jobs.

Job names are fixed (``noop``, ``noop_sync``) so the bench process and the
worker subprocess agree on them however this module is imported.
"""

from __future__ import annotations

from instar import App


async def noop() -> None:
    """An async handler: runs as a task on the worker's event loop."""


def noop_sync() -> None:
    """A sync handler: runs in the worker's thread pool, so it measures that hop too."""


def make_app(database: str | None = None) -> App:
    """A fresh App on ``database`` with both handlers; one per benchmark database."""
    app = App(database)
    app.job(name="noop")(noop)
    app.job(name="noop_sync")(noop_sync)
    return app


# What ``instar worker --app bench.noop_app:app --database ...`` loads.
app = make_app()
