"""What the SQLite and the PostgreSQL measurements share: sizes, worker
processes, reading their timelines, and the result table.

Timelines are read with plain SQL through a ``Query`` (one parameterless
statement in, rows out), so the same code serves ``sqlite3`` and ``psycopg``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

from bench.noop_app import make_app

ROOT = Path(__file__).resolve().parent.parent
APP_REF = "bench.noop_app:app"

# Wide enough for the detail column when the output is a file or a pipe.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 170)
progress = Console(stderr=True, highlight=False)

# A parameterless statement in, its rows out: how timelines are read on either backend.
Query = Callable[[str], Sequence[Sequence[Any]]]
DB_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)


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
    workers: int  # worker processes side by side, in the second processing figure
    claim_batches: int
    claim_limit: int
    finished_rows: int  # completed jobs in the table for the claiming comparison


FULL = Sizes(
    raw_rows=3_000,
    raw_seconds=2.0,
    enqueue_jobs=3_000,
    bulk_total=50_000,
    bulk_chunk=10_000,
    process_jobs=10_000,
    pickup_jobs=200,
    pickup_gap=0.020,
    concurrency=100,
    worker_timeout=300.0,
    workers=4,
    claim_batches=50,
    claim_limit=100,
    finished_rows=1_000_000,
)
QUICK = Sizes(
    raw_rows=500,
    raw_seconds=0.5,
    enqueue_jobs=500,
    bulk_total=10_000,
    bulk_chunk=5_000,
    process_jobs=2_000,
    pickup_jobs=50,
    pickup_gap=0.020,
    concurrency=100,
    worker_timeout=120.0,
    workers=4,
    claim_batches=20,
    claim_limit=100,
    finished_rows=100_000,
)


@dataclass(frozen=True)
class Row:
    """One line of a result table, already formatted."""

    figure: str
    value: str
    ratio: str
    target: str
    met: bool | None
    detail: str


@dataclass(frozen=True)
class Processing:
    """Burst workers draining a full queue."""

    jobs: int
    processes: int
    first_claim_seconds: float  # first worker process start -> first 'running' event
    wall_seconds: float  # first worker process start -> last 'completed' event
    exit_seconds: float  # first worker process start -> the last process exits
    steady_rate: float  # completions/s between the 10% and 90% completed events

    @property
    def wall_rate(self) -> float:
        return self.jobs / self.wall_seconds


# -- helpers -------------------------------------------------------------------


def sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def load_note(at_start: float) -> str:
    """The 1-minute load average then and now: other work on the machine shows here."""
    return f"load {at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"


def rate(value: float) -> str:
    return f"{value:,.0f} /s"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


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


def bulk_enqueue(url: str, total: int, chunk: int, name: str = "noop") -> float:
    """``app.enqueue_many`` in chunks: one transaction per chunk; jobs/s."""
    with make_app(url) as app:
        app.engine  # open and migrate outside the timing  # noqa: B018
        defn = app.definition(name)
        start = time.perf_counter()
        done = 0
        while done < total:
            n = min(chunk, total - done)
            app.enqueue_many(defn, [{}] * n)
            done += n
        return total / (time.perf_counter() - start)


def enqueue_one_by_one(url: str, jobs: int) -> float:
    """``defn.enqueue()`` in a loop: one transaction per job, as a web request would."""
    with make_app(url) as app:
        app.engine  # noqa: B018
        defn = app.definition("noop")
        start = time.perf_counter()
        for _ in range(jobs):
            defn.enqueue()
        return jobs / (time.perf_counter() - start)


# -- worker measurements, on either backend ----------------------------------------


def drain(
    url: str, query: Query, tmp: Path, label: str, sizes: Sizes, processes: int = 1
) -> Processing:
    """Time ``processes`` burst workers, started together, draining the queued jobs.

    The jobs must already be queued (all of them ``noop`` or ``noop_sync``);
    ``query`` reads the events the workers wrote.
    """
    n = int(query("SELECT count(*) FROM jobs WHERE state = 'ready'")[0][0])
    logs = [tmp / f"{label}-{i}.log" for i in range(processes)]
    with ExitStack() as stack:
        start = time.time()
        procs = [
            stack.enter_context(worker_process(url, sizes.concurrency, log, burst=True))
            for log in logs
        ]
        deadline = time.monotonic() + sizes.worker_timeout
        for proc, log in zip(procs, logs, strict=True):
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise BenchError(
                    f"burst worker ({label}) still running after {sizes.worker_timeout:.0f}s:\n"
                    f"{log_tail(log)}"
                ) from None
            if proc.returncode != 0:
                raise BenchError(
                    f"burst worker ({label}) exited {proc.returncode}:\n{log_tail(log)}"
                )
        exited = time.time()
    since = f"at >= {start!r}"  # earlier events, if any, are not this run's
    completed = f"SELECT at FROM events WHERE to_state = 'completed' AND {since} ORDER BY at"
    times = [float(at) for (at,) in query(completed)]
    first_claim = query(f"SELECT min(at) FROM events WHERE to_state = 'running' AND {since}")[0][0]
    first_claim_at = start if first_claim is None else float(first_claim)
    if len(times) != n:
        raise BenchError(f"{label}: {len(times)} of {n} jobs completed:\n{log_tail(logs[0])}")
    low, high = round(0.1 * (n - 1)), round(0.9 * (n - 1))
    span = times[high] - times[low]
    steady = (high - low) / span if span > 0 else float("inf")
    return Processing(
        n, processes, first_claim_at - start, times[-1] - start, exited - start, steady
    )


def pickup_latency(
    url: str, query: Query, tmp: Path, sizes: Sizes
) -> tuple[list[float], int | None]:
    """Enqueue from this process to an idle worker in another; seconds to each claim.

    Latency is the claim event's time (the ``running`` event the worker writes)
    minus ``time.time()`` just before the enqueue call, so it includes the
    enqueue's own commit. Returns the latencies and the worker's exit code
    after SIGTERM.
    """
    log = tmp / "pickup.log"
    with make_app(url) as app:
        app.engine  # migrate before the worker starts  # noqa: B018
        defn = app.definition("noop")
        with worker_process(url, sizes.concurrency, log, burst=False) as proc:

            def started() -> bool:
                # The CLI logs "worker ... started"; its maintenance loop also
                # takes leadership at once. Either means the loop is running.
                if b" started" in log.read_bytes():
                    return True
                try:
                    return bool(query("SELECT count(*) FROM leaders")[0][0])
                except DB_ERRORS:
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
                done = query("SELECT count(*) FROM jobs WHERE state = 'completed'")[0][0]
                return int(done) >= len(before)

            wait_for(all_done, 60, "waiting for the jobs to complete", proc, log)
            claimed = {
                int(job_id): float(at)
                for job_id, at in query("SELECT job_id, at FROM events WHERE to_state = 'running'")
            }
            stop_process(proc)
            code = proc.returncode
    missing = set(before) - set(claimed)
    if missing:
        raise BenchError(f"{len(missing)} job(s) have no claim event")
    return [claimed[job_id] - stamp for job_id, stamp in before.items()], code


def latency_detail(latencies: list[float], sizes: Sizes, code: int | None) -> str:
    return (
        f"{len(latencies)} jobs {sizes.pickup_gap * 1000:.0f} ms apart; "
        f"mean {sum(latencies) / len(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms; worker exit on SIGTERM: {code}"
    )


def processing_detail(result: Processing, sizes: Sizes) -> str:
    procs = f"{result.processes} processes" if result.processes > 1 else "1 process"
    return (
        f"{result.jobs:,} jobs in {result.wall_seconds:.2f} s from process start; "
        f"first claim at {result.first_claim_seconds:.2f} s, "
        f"exit at {result.exit_seconds:.2f} s; {procs}, concurrency {sizes.concurrency} each"
    )


# -- the table ---------------------------------------------------------------------


def render(title: str, caption: str, rows: list[Row]) -> Table:
    table = Table(title=title, caption=caption)
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
