"""pgqueuer's consumer for the benchmark, written as its documentation writes
one: an asyncpg connection, ``PgQueuer(AsyncpgDriver(connection))`` and async
entrypoints (pgqueuer 1.x runs only ``async def`` entrypoints).

Started as a user starts it: ``pgq run bench.pgq_app:main`` (``--mode drain``
to exit once the queue is empty, as ``instar worker --burst`` does), with every
other setting at its default. pgqueuer 1.6's ``pgq run`` wants the factory to be
an async context manager (its own error message shows the form used here). The
bench sets ``INSTAR_BENCH_PG_DSN`` (where to connect), ``PGQUEUER_SCHEMA``
(pgqueuer's own setting: the schema its tables live in) and, for the pickup
latency, ``INSTAR_BENCH_STAMPS`` (a file).

pgqueuer is imported through ``importlib`` so that this module type-checks in an
environment without it (the project's own); its objects are ``Any`` here.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


async def noop(job: Any) -> None:
    """Does nothing: the benchmark measures the queue, not the job."""


async def stamp(job: Any) -> None:
    """Appends ``<sent> <started>`` to $INSTAR_BENCH_STAMPS; the payload is the time
    (``time.time()``) taken just before the job was enqueued."""
    started = time.time()
    with open(os.environ["INSTAR_BENCH_STAMPS"], "a") as out:
        out.write(f"{job.payload.decode()} {started!r}\n")


@asynccontextmanager
async def main() -> AsyncIterator[Any]:
    """The factory ``pgq run`` enters: a PgQueuer with the two entrypoints."""
    asyncpg = importlib.import_module("asyncpg")
    pgqueuer = importlib.import_module("pgqueuer")
    connection = await asyncpg.connect(os.environ["INSTAR_BENCH_PG_DSN"])
    try:
        pgq = pgqueuer.PgQueuer(pgqueuer.AsyncpgDriver(connection))
        pgq.entrypoint("noop")(noop)
        pgq.entrypoint("stamp")(stamp)
        yield pgq
    finally:
        await connection.close()
