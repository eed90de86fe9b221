"""huey's tasks for the benchmark: a ``SqliteHuey`` with its defaults and a no-op
task, run by huey's own consumer as a user runs it
(``huey_consumer bench.huey_app.huey``: one worker thread, default polling).

``SqliteHuey`` defaults to ``journal_mode=wal`` and sets no ``synchronous``
pragma, so SQLite's compiled-in default applies (FULL on the usual builds); the
bench reads both pragmas back through huey's own connection and prints them.

The bench sets ``INSTAR_BENCH_HUEY_DB`` (the database file) and
``INSTAR_BENCH_HUEY_DONE`` (a file the ``finished`` task writes its time to: it
is queued after the no-ops, so with one worker it runs when they are all done).
huey is imported through ``importlib`` so this module type-checks where huey
is not installed; its objects are ``Any`` here.
"""

from __future__ import annotations

import importlib
import os
import time
from typing import Any

NAME = "bench"


def noop() -> None:
    """Does nothing: the benchmark measures the queue, not the job."""


def finished() -> None:
    """Writes the time it runs to $INSTAR_BENCH_HUEY_DONE."""
    now = time.time()
    path = os.environ["INSTAR_BENCH_HUEY_DONE"]
    with open(path + ".tmp", "w") as out:
        out.write(repr(now))
    os.replace(path + ".tmp", path)


def make_huey(filename: str) -> tuple[Any, Any, Any]:
    """A ``SqliteHuey`` on ``filename`` with its defaults, and the two tasks."""
    huey_module = importlib.import_module("huey")
    instance = huey_module.SqliteHuey(name=NAME, filename=filename)
    return instance, instance.task()(noop), instance.task()(finished)


# What ``huey_consumer bench.huey_app.huey`` loads (in the bench process, which
# imports this module for ``make_huey``, nothing is opened).
huey: Any = None
if "INSTAR_BENCH_HUEY_DB" in os.environ:
    huey = make_huey(os.environ["INSTAR_BENCH_HUEY_DB"])[0]
