"""Instar's throughput and pickup latency on SQLite, each beside this machine's raw limit.

Why the raw limit: with ``synchronous=FULL`` every commit waits for the disk,
so a figure in jobs/s says little until it is set beside what plain sqlite3
manages on the same disk in the same run. Every figure is printed with that
ratio, and with the target it is held to.

Run ``make bench``, or ``.venv/bin/python bench/run.py --quick`` for a short run.
Workers run as separate processes, started as a user would start them
(``instar worker``); timings of their work come from the ``events`` table.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

# ``python bench/run.py`` puts bench/ on the path, not the repository root that
# ``bench.noop_app`` needs (worker subprocesses get the root through PYTHONPATH).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.noop_app import make_app

ROOT = Path(__file__).resolve().parent.parent
APP_REF = "bench.noop_app:app"

# Wide enough for the detail column when the output is a file or a pipe.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
progress = Console(stderr=True, highlight=False)


class BenchError(Exception):
    """A measurement could not be taken (a worker died, jobs went missing)."""


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does; ``--quick`` picks the small set."""

    raw_rows: int
    raw_seconds: float
    enqueue_jobs: int
    bulk_total: int
    bulk_chunk: int
    process_jobs: int
    pickup_jobs: int
    pickup_gap: float
    concurrency: int
    worker_timeout: float


FULL = Sizes(3_000, 2.0, 3_000, 50_000, 10_000, 10_000, 200, 0.020, 100, 300.0)
QUICK = Sizes(500, 0.5, 500, 10_000, 5_000, 2_000, 50, 0.020, 100, 120.0)


@dataclass(frozen=True)
class Row:
    """One line of the result table, already formatted."""

    figure: str
    value: str
    ratio: str
    target: str
    met: bool | None
    detail: str


@dataclass(frozen=True)
class Processing:
    """One burst worker draining a full queue."""

    jobs: int
    first_claim_seconds: float  # worker process start -> first 'running' event (startup)
    wall_seconds: float  # worker process start -> last 'completed' event
    exit_seconds: float  # worker process start -> process exit
    steady_rate: float  # completions/s between the 10% and 90% completed events


# -- helpers -------------------------------------------------------------------


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def read_db(path: Path) -> sqlite3.Connection:
    """A plain connection for measurement only: Instar's API has no timeline-wide query."""
    return sqlite3.connect(path, timeout=30)


def sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def worker_command(url: str, concurrency: int, *, burst: bool) -> list[str]:
    """``instar worker`` as a user runs it; ``python -c`` if the CLI is not installed."""
    cli = Path(sys.executable).parent / "instar"
    if cli.exists():
        command = [str(cli), "worker", "--app", APP_REF, "--database", url]
        command += ["--concurrency", str(concurrency)]
        return [*command, "--burst"] if burst else command
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO);"
        "from bench.noop_app import app; app.database = sys.argv[1];"
        "app.run_worker(concurrency=int(sys.argv[2]), burst=sys.argv[3] == '1')"
    )
    return [sys.executable, "-c", code, url, str(concurrency), "1" if burst else "0"]


@contextmanager
def worker_process(
    url: str, concurrency: int, log_path: Path, *, burst: bool
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker subprocess that is always stopped: SIGTERM, then SIGKILL if it lingers."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            worker_command(url, concurrency, burst=burst),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no worker log)"
    return "\n".join(text.splitlines()[-lines:]) or "(worker log is empty)"


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes],
    log: Path,
) -> None:
    """Poll ``condition`` until true; fail early if the worker died."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise BenchError(f"worker exited ({proc.returncode}) while {what}:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s {what}:\n{log_tail(log)}")
        time.sleep(0.01)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# -- measurements ----------------------------------------------------------------


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


def enqueue_one_by_one(path: Path, sizes: Sizes) -> float:
    """``defn.enqueue()`` in a loop: one transaction per job, as a web request would."""
    with make_app(sqlite_url(path)) as app:
        app.engine  # open and migrate outside the timing  # noqa: B018
        defn = app.definition("noop")
        start = time.perf_counter()
        for _ in range(sizes.enqueue_jobs):
            defn.enqueue()
        return sizes.enqueue_jobs / (time.perf_counter() - start)


def bulk_enqueue(path: Path, total: int, chunk: int, name: str = "noop") -> float:
    """``app.enqueue_many`` in chunks: one transaction per chunk."""
    with make_app(sqlite_url(path)) as app:
        app.engine  # noqa: B018
        defn = app.definition(name)
        start = time.perf_counter()
        done = 0
        while done < total:
            n = min(chunk, total - done)
            app.enqueue_many(defn, [{}] * n)
            done += n
        return total / (time.perf_counter() - start)


def processing(tmp: Path, handler: str, sizes: Sizes) -> Processing:
    """Queue the jobs first, then time ONE burst worker process draining them."""
    path = tmp / f"process-{handler}.db"
    log = tmp / f"process-{handler}.log"
    n = sizes.process_jobs
    bulk_enqueue(path, n, sizes.bulk_chunk, handler)
    url = sqlite_url(path)
    start = time.time()
    with worker_process(url, sizes.concurrency, log, burst=True) as proc:
        try:
            proc.wait(sizes.worker_timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"burst worker ({handler}) still running after {sizes.worker_timeout:.0f}s:\n"
                f"{log_tail(log)}"
            ) from None
        exited = time.time()
    if proc.returncode != 0:
        raise BenchError(f"burst worker ({handler}) exited {proc.returncode}:\n{log_tail(log)}")
    with closing(read_db(path)) as conn:
        times = [
            at
            for (at,) in conn.execute(
                "SELECT at FROM events WHERE to_state = 'completed' ORDER BY at"
            )
        ]
        first_claim = conn.execute("SELECT min(at) FROM events WHERE to_state = 'running'")
        first_claim_at = float(first_claim.fetchone()[0] or start)
    if len(times) != n:
        raise BenchError(f"{handler}: {len(times)} of {n} jobs completed:\n{log_tail(log)}")
    low, high = round(0.1 * (n - 1)), round(0.9 * (n - 1))
    span = times[high] - times[low]
    steady = (high - low) / span if span > 0 else float("inf")
    return Processing(n, first_claim_at - start, times[-1] - start, exited - start, steady)


def pickup_latency(tmp: Path, sizes: Sizes) -> tuple[list[float], int | None]:
    """Enqueue from this process to an idle worker in another; seconds to each claim.

    Latency is the claim event's time (the ``running`` event the worker writes)
    minus ``time.time()`` just before the enqueue call, so it includes the
    enqueue's own commit. Returns the latencies and the worker's exit code
    after SIGTERM.
    """
    path = tmp / "pickup.db"
    log = tmp / "pickup.log"
    url = sqlite_url(path)
    with make_app(url) as app:
        app.engine  # migrate before the worker starts  # noqa: B018
        defn = app.definition("noop")
        with worker_process(url, sizes.concurrency, log, burst=False) as proc:
            with closing(read_db(path)) as conn:

                def started() -> bool:
                    # The CLI logs "worker ... started"; its maintenance loop also
                    # takes leadership at once. Either means the loop is running.
                    if b" started" in log.read_bytes():
                        return True
                    try:
                        return bool(conn.execute("SELECT count(*) FROM leaders").fetchone()[0])
                    except sqlite3.Error:
                        return False

                wait_for(started, 60, "waiting for the worker to start", proc, log)
                time.sleep(0.5)  # past its first exchange and into the idle wait
                before: dict[int, float] = {}
                first = time.monotonic()
                for i in range(sizes.pickup_jobs):
                    sleep_until(first + i * sizes.pickup_gap)
                    stamp = time.time()
                    before[defn.enqueue().id] = stamp

                def all_done() -> bool:
                    query = "SELECT count(*) FROM jobs WHERE state = 'completed'"
                    return int(conn.execute(query).fetchone()[0]) >= len(before)

                wait_for(all_done, 60, "waiting for the jobs to complete", proc, log)
                claimed = dict(
                    conn.execute("SELECT job_id, at FROM events WHERE to_state = 'running'")
                )
            stop_process(proc)
            code = proc.returncode
    missing = set(before) - set(claimed)
    if missing:
        raise BenchError(f"{len(missing)} job(s) have no claim event")
    return [claimed[job_id] - stamp for job_id, stamp in before.items()], code


# -- the table ---------------------------------------------------------------------


def rate(value: float) -> str:
    return f"{value:,.0f} /s"


def run(sizes: Sizes, tmp: Path, rows: list[Row]) -> None:
    """Take every measurement in turn, appending to ``rows`` (kept if a later one fails)."""
    progress.print("raw sqlite3 commits ...")
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

    progress.print("enqueue one by one ...")
    one = enqueue_one_by_one(tmp / "enqueue.db", sizes)
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

    progress.print("bulk enqueue ...")
    bulk = bulk_enqueue(tmp / "bulk.db", sizes.bulk_total, sizes.bulk_chunk)
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
        progress.print(f"processing, {label} handler ...")
        result = processing(tmp, handler, sizes)
        wall = result.jobs / result.wall_seconds
        rows.append(
            Row(
                f"processing, {label} no-op: wall",
                rate(wall),
                f"{wall / raw:.2f}x",
                ">= 12,000 /s",
                wall >= 12_000,
                f"{result.jobs:,} jobs in {result.wall_seconds:.2f} s from process start; "
                f"first claim at {result.first_claim_seconds:.2f} s, "
                f"exit at {result.exit_seconds:.2f} s; concurrency {sizes.concurrency}",
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

    progress.print("pickup latency of an idle worker ...")
    latencies, code = pickup_latency(tmp, sizes)
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    detail = (
        f"{len(latencies)} jobs {sizes.pickup_gap * 1000:.0f} ms apart; "
        f"mean {statistics.fmean(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms; "
        f"worker exit on SIGTERM: {code}"
    )
    rows.append(
        Row(
            "pickup latency p50",
            f"{p50:.1f} ms",
            f"{p50 / commit_ms:.1f} commits",
            "<= 10 ms",
            p50 <= 10,
            detail,
        )
    )
    rows.append(
        Row("pickup latency p99", f"{p99:.1f} ms", f"{p99 / commit_ms:.1f} commits", "-", None, "")
    )


def render(rows: list[Row], tmp: Path) -> Table:
    table = Table(
        title="Instar on SQLite (journal_mode=WAL, synchronous=FULL)",
        caption=(
            f"x raw: the figure over the raw commit rate; latency in raw commit times. "
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"{os.cpu_count()} CPUs (load {os.getloadavg()[0]:.1f} at the end), "
            f"{platform.system()} {platform.release()}, databases in {tmp.parent}."
        ),
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("x raw", justify="right")
    table.add_column("target", justify="right")
    table.add_column("met", justify="center")
    table.add_column("detail")
    for row in rows:
        met = "" if row.met is None else ("[green]yes[/]" if row.met else "[red]NO[/]")
        table.add_row(row.figure, row.value, row.ratio, row.target, met, row.detail)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smaller, faster run")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a figure misses its target"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the databases and worker logs, print where"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    tmp = Path(tempfile.mkdtemp(prefix="instar-bench-"))
    rows: list[Row] = []
    status = 0
    try:
        run(sizes, tmp, rows)
    except (BenchError, sqlite3.Error) as error:
        progress.print(f"[bold red]bench failed:[/] {error}", markup=True, highlight=False)
        status = 2
    except KeyboardInterrupt:
        progress.print("interrupted; workers stopped")
        status = 130
    finally:
        if args.keep:
            progress.print(f"databases and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if rows:
        out.print(render(rows, tmp))
    if status:
        return status
    return 1 if args.strict and any(row.met is False for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
