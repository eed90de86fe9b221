"""The two peer queues, measured the way their documentation says to use them,
with their defaults: pgqueuer on PostgreSQL, huey (``SqliteHuey``) on SQLite.

Both are installed only in the benchmark's own environment (``make bench``
creates ``.venv-bench`` from bench/requirements.txt), never as dependencies of
Instar. They are imported through ``importlib`` so this module type-checks
where they are absent; their objects are ``Any`` here. A missing peer is a
``PeerMissing``: its rows say so and the targets against it are not judged.

- pgqueuer: tables created by its own API (``Queries.install``) in a schema of
  their own (``PGQUEUER_SCHEMA``, its setting), dropped afterwards; bulk
  enqueue with ``Queries.enqueue`` given lists; processing by
  ``pgq run bench.pgq_app:main --mode drain`` (one process, its default batch
  size, no concurrency limit); completions read from its log table
  (``pgqueuer_log``, status ``successful``).
- huey: ``SqliteHuey`` with its defaults (WAL; no ``synchronous`` pragma, so
  SQLite's default; both read back and shown), one ``huey_consumer`` with its
  default settings (one worker thread); the no-ops queued in one transaction
  (setup, not timed), then a ``finished`` task whose start marks the end.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.harness import (
    BenchError,
    Latency,
    Processing,
    Sizes,
    bench_env,
    completion_stats,
    log_tail,
    pickup_offsets,
    read_stamps,
    run_to_exit,
    started,
    stop_process,
    tool,
)
from bench.huey_app import make_huey
from bench.system import CpuMeter


class PeerMissing(BenchError):
    """A peer queue is not installed in this environment."""


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing(dist: str) -> str | None:
    """Why the peer ``dist`` cannot be measured here, or None when it can."""
    module = {"pgqueuer": "pgqueuer", "huey": "huey"}[dist]
    script = {"pgqueuer": "pgq", "huey": "huey_consumer"}[dist]
    try:
        importlib.import_module(module)
        if dist == "pgqueuer":
            importlib.import_module("asyncpg")
    except ImportError as error:
        return f"{dist} not measured: {error}; `make bench` installs it in .venv-bench"
    if tool(script) is None:
        return f"{dist} not measured: no `{script}` beside {sys.executable}"
    return None


def _module(name: str, dist: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise PeerMissing(
            f"{dist} is not installed here: run `make bench` (it builds .venv-bench)"
        ) from None


# -- pgqueuer --------------------------------------------------------------------------


@contextmanager
def pgq_schema(schema: str) -> Iterator[None]:
    """pgqueuer reads its schema from $PGQUEUER_SCHEMA once per process (cached);
    point it at ``schema`` for the objects built inside."""
    settings = _module("pgqueuer.domain.settings", "pgqueuer")
    previous = os.environ.get("PGQUEUER_SCHEMA")
    os.environ["PGQUEUER_SCHEMA"] = schema
    settings.db_settings.cache_clear()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PGQUEUER_SCHEMA", None)
        else:
            os.environ["PGQUEUER_SCHEMA"] = previous
        settings.db_settings.cache_clear()


async def _queries(dsn: str) -> tuple[Any, Any]:
    """An asyncpg connection and pgqueuer's ``Queries`` over it."""
    asyncpg = _module("asyncpg", "asyncpg")
    pgqueuer = _module("pgqueuer", "pgqueuer")
    conn = await asyncpg.connect(dsn)
    return conn, pgqueuer.Queries(pgqueuer.AsyncpgDriver(conn))


def pgq_install(dsn: str, schema: str) -> None:
    """pgqueuer's tables, types, functions and trigger, in ``schema``."""

    async def install() -> None:
        conn, queries = await _queries(dsn)
        try:
            await queries.install()
        finally:
            await conn.close()

    with pgq_schema(schema):
        asyncio.run(install())


def pgq_bulk_enqueue(dsn: str, schema: str, total: int, chunk: int) -> float:
    """``Queries.enqueue`` with lists, ``chunk`` jobs per call (one statement,
    one transaction each), as its documentation shows for batches: jobs/s."""

    async def enqueue() -> float:
        conn, queries = await _queries(dsn)
        try:
            start = time.perf_counter()
            done = 0
            while done < total:
                n = min(chunk, total - done)
                await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
                done += n
            return total / (time.perf_counter() - start)
        finally:
            await conn.close()

    with pgq_schema(schema):
        return asyncio.run(enqueue())


def pgq_command(*args: str) -> list[str]:
    pgq = tool("pgq")
    if pgq is None:
        raise PeerMissing("pgqueuer's `pgq` is not installed here: run `make bench`")
    return [str(pgq), "run", "bench.pgq_app:main", *args]


def pgq_drain(dsn: str, schema: str, tmp: Path, label: str, sizes: Sizes) -> Processing:
    """One ``pgq run --mode drain`` process draining the jobs already queued;
    the wall time runs from its start to the last ``successful`` log entry."""
    log_table = f"{schema}.pgqueuer_log"
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = conn.execute(f"SELECT count(*) FROM {schema}.pgqueuer".encode()).fetchone()
        n = int(found[0]) if found else 0
        env = bench_env(INSTAR_BENCH_PG_DSN=dsn, PGQUEUER_SCHEMA=schema)
        log = tmp / f"{label}.log"
        timed = run_to_exit(
            [pgq_command("--mode", "drain")],
            [log],
            env,
            sizes.worker_timeout,
            f"pgqueuer {label}",
            server_cpu=True,
        )
        rows = conn.execute(
            f"SELECT extract(epoch FROM created)::float8 FROM {log_table} "
            "WHERE status = 'successful' ORDER BY created".encode()
        ).fetchall()
        first = conn.execute(
            f"SELECT min(extract(epoch FROM created))::float8 FROM {log_table} "
            "WHERE status = 'picked'".encode()
        ).fetchone()
    times = [float(at) for (at,) in rows]
    if len(times) != n:
        raise BenchError(f"pgqueuer {label}: {len(times)} of {n} jobs completed:\n{log_tail(log)}")
    wall, steady = completion_stats(times, timed.start)
    first_at = timed.start if first is None or first[0] is None else float(first[0])
    return Processing(
        label, n, 1, first_at - timed.start, wall, timed.exited - timed.start, steady, timed.cpu
    )


def pgq_pickup(dsn: str, schema: str, tmp: Path, sizes: Sizes, label: str) -> Latency:
    """Enqueue from this process, one job at a time (``Queries.enqueue``), to an
    idle ``pgq run`` in another; its ``stamp`` entrypoint records when it starts."""
    stamps = tmp / f"{label}-stamps.txt"
    log = tmp / f"{label}.log"
    env = bench_env(
        INSTAR_BENCH_PG_DSN=dsn, PGQUEUER_SCHEMA=schema, INSTAR_BENCH_STAMPS=str(stamps)
    )

    async def enqueue_all(proc: Any) -> None:
        conn, queries = await _queries(dsn)
        try:

            async def wait_stamps(count: int, what: str) -> None:
                deadline = time.monotonic() + 60
                while len(read_stamps(stamps)) < count:
                    if proc.poll() is not None:
                        raise BenchError(f"pgqueuer exited while {what}:\n{log_tail(log)}")
                    if time.monotonic() > deadline:
                        raise BenchError(f"pgqueuer timed out {what}:\n{log_tail(log)}")
                    await asyncio.sleep(0.005)

            # A first job, then a pause: the worker is up, past its first turns and idle.
            await queries.enqueue("stamp", repr(time.time()).encode())
            await wait_stamps(1, "starting")
            await asyncio.sleep(0.5)
            first = time.monotonic()
            for offset in pickup_offsets(sizes.pickup_jobs, sizes.pickup_gap):
                delay = first + offset - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await queries.enqueue("stamp", repr(time.time()).encode())
            await wait_stamps(sizes.pickup_jobs + 1, "running")
        finally:
            await conn.close()

    with pgq_schema(schema), started(pgq_command(), log, env) as proc:
        asyncio.run(enqueue_all(proc))
        stop_process(proc)
        code = proc.returncode
    pairs = read_stamps(stamps)[1:]
    return Latency([started_at - sent for sent, started_at in pairs], code)


# -- huey ----------------------------------------------------------------------------


def huey_pragmas(path: Path) -> tuple[str, str]:
    """journal_mode and synchronous as huey's own connection has them."""
    huey, _, _ = make_huey(str(path))
    conn = huey.storage.conn
    mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    sync = int(conn.execute("PRAGMA synchronous").fetchone()[0])
    return mode, {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(sync, str(sync))


def huey_drain(tmp: Path, label: str, sizes: Sizes, jobs: int) -> Processing:
    """``jobs`` no-op tasks and a ``finished`` one queued, then one
    ``huey_consumer`` with its defaults; the wall time runs from its start to
    the start of ``finished`` (one worker thread takes the tasks in order)."""
    _module("huey", "huey")
    consumer = tool("huey_consumer")
    if consumer is None:
        raise PeerMissing("huey's `huey_consumer` is not installed here: run `make bench`")
    path = tmp / f"{label}.db"
    done = tmp / f"{label}.done"
    log = tmp / f"{label}.log"
    huey, noop, finished = make_huey(str(path))
    tasks = [huey.serialize_task(noop.s()) for _ in range(jobs)]
    tasks.append(huey.serialize_task(finished.s()))
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO task (queue, data, priority) VALUES (?, ?, 0)",
            [(huey.name, data) for data in tasks],
        )
        conn.execute("COMMIT")
    env = bench_env(INSTAR_BENCH_HUEY_DB=str(path), INSTAR_BENCH_HUEY_DONE=str(done))
    meter = CpuMeter(server=False)
    start = time.time()
    with started([str(consumer), "bench.huey_app.huey"], log, env) as proc:
        deadline = time.monotonic() + sizes.worker_timeout
        while not done.exists():
            if proc.poll() is not None:
                raise BenchError(f"huey {label}: consumer exited:\n{log_tail(log)}")
            if time.monotonic() > deadline:
                raise BenchError(f"huey {label}: not done after {sizes.worker_timeout:.0f}s")
            time.sleep(0.005)
        end = float(done.read_text())
    cpu = meter.stop()
    left = huey.pending_count()
    if left:
        raise BenchError(f"huey {label}: {left} tasks left in the queue:\n{log_tail(log)}")
    times, first = _huey_log_times(log)
    steady = completion_stats(times, start)[1] if len(times) >= jobs else None
    return Processing(
        label,
        jobs,
        1,
        (first if first is not None else start) - start,
        end - start,
        None,
        steady,
        cpu,
    )


def _huey_log_times(log: Path) -> tuple[list[float], float | None]:
    """When each task finished, from the consumer's log lines (its default
    format: ``[2026-01-01 12:00:00,123] INFO:huey:Worker-1:... executed in``),
    and when the first one started; empty when the format is not that."""
    times: list[float] = []
    first: float | None = None
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return [], None
    for line in lines:
        if not line.startswith("[") or ":Worker-" not in line:
            continue
        try:
            at = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        if "Executing" in line and first is None:
            first = at
        elif " executed in " in line and ".noop:" in line:
            times.append(at)
    return times, first
