"""Instar's throughput and pickup latency on SQLite and on PostgreSQL, each
beside the raw limit of the same database measured in the same run.

Why the raw limit: every commit waits for the disk (SQLite ``synchronous=FULL``,
PostgreSQL ``synchronous_commit=on``), so a figure in jobs/s says little until
it is set beside what the plain driver manages on the same disk in the same
run: one committed single-row INSERT at a time. Every figure is printed with
that ratio, and with the target it is held to; one table per backend.

Run ``make bench``, or ``.venv/bin/python bench/run.py --quick`` for a short run;
``--backend sqlite`` or ``--backend postgresql`` for one of them. Workers run as
separate processes, started as a user would start them (``instar worker``);
timings of their work come from the ``events`` table. On PostgreSQL each
measurement gets a schema of its own (``?schema=bench_<pid>_<what>``), dropped
afterwards, also when the run fails or is interrupted.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

# ``python bench/run.py`` puts bench/ on the path, not the repository root that
# ``bench.*`` needs (worker subprocesses get the root through PYTHONPATH).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import postgres
from bench.harness import (
    FULL,
    QUICK,
    BenchError,
    Query,
    Row,
    Sizes,
    bulk_enqueue,
    drain,
    enqueue_one_by_one,
    latency_detail,
    load_note,
    out,
    percentile,
    pickup_latency,
    processing_detail,
    progress,
    rate,
    render,
)

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


# -- SQLite ------------------------------------------------------------------------


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def raw_limit(path: Path, sizes: Sizes) -> tuple[float, int]:
    """Plain sqlite3, the store's pragmas, one committed row per transaction: rows/s."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, args TEXT, at REAL)")
        rows = 0
        start = time.perf_counter()
        while rows < sizes.raw_rows and time.perf_counter() - start < sizes.raw_seconds:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t (name, args, at) VALUES ('noop', '{}', ?)", (time.time(),))
            conn.execute("COMMIT")
            rows += 1
        elapsed = time.perf_counter() - start
    return rows / elapsed, rows


def sqlite_reader(conn: sqlite3.Connection) -> Query:
    """A plain connection for measurement only: Instar's API has no timeline-wide query."""

    def query(sql: str) -> Sequence[Sequence[Any]]:
        return conn.execute(sql).fetchall()

    return query


def run_sqlite(sizes: Sizes, tmp: Path, rows: list[Row]) -> None:
    """Take every SQLite measurement in turn, appending to ``rows`` (kept if a later one fails)."""
    progress.print("SQLite: raw sqlite3 commits ...")
    raw, raw_rows = raw_limit(tmp / "raw.db", sizes)
    commit_ms = 1000 / raw
    rows.append(
        Row(
            "raw limit: sqlite3 BEGIN/INSERT/COMMIT",
            rate(raw),
            "1.00x",
            "-",
            None,
            f"{raw_rows:,} rows; {commit_ms:.2f} ms per commit",
        )
    )

    progress.print("SQLite: enqueue one by one ...")
    one = enqueue_one_by_one(sqlite_url(tmp / "enqueue.db"), sizes.enqueue_jobs)
    rows.append(
        Row(
            "enqueue one by one",
            rate(one),
            f"{one / raw:.2f}x",
            ">= 0.80x raw",
            one / raw >= 0.8,
            f"{sizes.enqueue_jobs:,} jobs",
        )
    )

    progress.print("SQLite: bulk enqueue ...")
    bulk = bulk_enqueue(sqlite_url(tmp / "bulk.db"), sizes.bulk_total, sizes.bulk_chunk)
    rows.append(
        Row(
            "bulk enqueue (enqueue_many)",
            rate(bulk),
            f"{bulk / raw:.1f}x",
            ">= 50,000 /s",
            bulk >= 50_000,
            f"{sizes.bulk_total:,} jobs, {sizes.bulk_chunk:,} per call",
        )
    )

    for handler, label in (("noop", "async"), ("noop_sync", "sync")):
        progress.print(f"SQLite: processing, {label} handler ...")
        path = tmp / f"process-{handler}.db"
        bulk_enqueue(sqlite_url(path), sizes.process_jobs, sizes.bulk_chunk, handler)
        with closing(sqlite3.connect(path, timeout=30)) as conn:
            result = drain(sqlite_url(path), sqlite_reader(conn), tmp, handler, sizes)
        rows.append(
            Row(
                f"processing, {label} no-op: wall",
                rate(result.wall_rate),
                f"{result.wall_rate / raw:.2f}x",
                ">= 12,000 /s",
                result.wall_rate >= 12_000,
                processing_detail(result, sizes),
            )
        )
        rows.append(
            Row(
                f"processing, {label} no-op: steady",
                rate(result.steady_rate),
                f"{result.steady_rate / raw:.2f}x",
                ">= 12,000 /s",
                result.steady_rate >= 12_000,
                "completions between the 10% and 90% completed events",
            )
        )

    progress.print("SQLite: pickup latency of an idle worker ...")
    path = tmp / "pickup.db"
    with closing(sqlite3.connect(path, timeout=30)) as conn:
        latencies, code = pickup_latency(sqlite_url(path), sqlite_reader(conn), tmp, sizes)
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    rows.append(
        Row(
            "pickup latency p50",
            f"{p50:.1f} ms",
            f"{p50 / commit_ms:.1f} commits",
            "<= 10 ms",
            p50 <= 10,
            latency_detail(latencies, sizes, code),
        )
    )
    rows.append(
        Row("pickup latency p99", f"{p99:.1f} ms", f"{p99 / commit_ms:.1f} commits", "-", None, "")
    )


def sqlite_caption(tmp: Path, load_at_start: float) -> str:
    return (
        f"x raw: the figure over the raw commit rate; latency in raw commit times. "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs ({load_note(load_at_start)}), "
        f"{platform.system()} {platform.release()}, databases in {tmp.parent}."
    )


# -- the run -------------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the run as Ctrl-C does: workers stopped, schemas dropped."""
    raise KeyboardInterrupt


def section(
    name: str,
    measure: Callable[[list[Row]], None],
    title: Callable[[], str],
    caption: Callable[[], str],
) -> tuple[int, list[Row]]:
    """One backend's measurements and their table, printed even when a later
    measurement fails or the run is interrupted; the exit status and the rows."""
    rows: list[Row] = []
    status = 0
    try:
        measure(rows)
    except (BenchError, sqlite3.Error, psycopg.Error) as error:
        progress.print(f"[bold red]{name} bench failed:[/] {error}", markup=True, highlight=False)
        status = 2
    finally:
        if rows:
            out.print(render(title(), caption(), rows))
    return status, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smaller, faster run")
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgresql", "all"),
        default="all",
        help="which database to measure (default: all)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("INSTAR_BENCH_POSTGRES", DEFAULT_POSTGRES),
        help="the PostgreSQL database to measure in (default: $INSTAR_BENCH_POSTGRES "
        "or %(default)s); each measurement adds a schema of its own and drops it",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a figure misses its target"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the SQLite databases and worker logs, print where"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    tmp = Path(tempfile.mkdtemp(prefix="instar-bench-"))
    signal.signal(signal.SIGTERM, _interrupt)
    if os.getloadavg()[0] > 1.0:
        progress.print(
            f"note: the load average is {os.getloadavg()[0]:.1f}; other work on this machine "
            "(or on the PostgreSQL server) lowers every figure"
        )
    statuses: list[int] = []
    rows: list[Row] = []
    pg = postgres.PostgresBench(args.postgres_url, sizes, tmp)
    try:
        if args.backend in ("sqlite", "all"):
            load_at_start = os.getloadavg()[0]
            status, found = section(
                "SQLite",
                lambda into: run_sqlite(sizes, tmp, into),
                lambda: "Instar on SQLite (journal_mode=WAL, synchronous=FULL)",
                lambda: sqlite_caption(tmp, load_at_start),
            )
            statuses.append(status)
            rows += found
        if args.backend in ("postgresql", "all"):
            status, found = section("PostgreSQL", pg.run, pg.title, pg.caption)
            statuses.append(status)
            rows += found
    except KeyboardInterrupt:
        progress.print("interrupted; workers stopped")
        statuses.append(130)
    finally:
        pg.drop_schemas()
        if args.keep:
            progress.print(f"databases and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    status = max(statuses, default=0)
    if status:
        return status
    return 1 if args.strict and any(row.met is False for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
