"""What the SQLite and the PostgreSQL measurements share: sizes, processes,
Instar's workers and their timelines, the pickup latency, and the result table.

Timelines are read with plain SQL through a ``Query`` (one parameterless
statement in, rows out), so the same code serves ``sqlite3`` and ``psycopg``.
Every queue (Instar, pgqueuer, huey) is started as its user starts it, as a
separate process with its default settings, and timed from the moment that
process is started.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from rich.console import Console
from rich.table import Table

from bench.noop_app import make_app
from bench.system import CpuMeter, CpuSplit

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
APP_REF = "bench.noop_app:app"

# Wide enough for the detail column when the output is a file or a pipe.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
progress = Console(stderr=True, highlight=False)

# A parameterless statement in, its rows out: how timelines are read on either backend.
Query = Callable[[str], Sequence[Sequence[Any]]]
DB_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)


class BenchError(Exception):
    """A measurement could not be taken (a worker died, jobs went missing)."""


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does; ``--quick`` picks the small set."""

    quick: bool
    raw_rows: int
    raw_seconds: float
    enqueue_jobs: int
    bulk_total: int
    bulk_chunk: int
    process_jobs: int  # queued before each processing run (every queue gets the same)
    rounds: int  # processing runs of each kind, interleaved with the peer's
    enqueue_rounds: int  # raw limit and enqueue one by one, in turns
    bare_batch: int  # jobs per claim in the bare loop
    pickup_jobs: int
    pickup_gap: float  # mean seconds between two enqueues (jittered +-50%)
    workers: int  # worker processes side by side, in the several-processes figure
    worker_timeout: float
    claim_batches: int
    claim_limit: int
    finished_postgres: int  # completed jobs in the table for the claiming comparison
    finished_sqlite: int
    memory_from: int  # RSS of one worker sampled at these two jobs
    memory_to: int
    pruned: int  # old finished jobs (three events each) pruned in the retention figure


FULL = Sizes(
    quick=False,
    raw_rows=3_000,
    raw_seconds=2.0,
    enqueue_jobs=3_000,
    bulk_total=50_000,
    bulk_chunk=10_000,
    process_jobs=20_000,
    rounds=5,
    enqueue_rounds=5,
    bare_batch=100,
    pickup_jobs=200,
    pickup_gap=0.020,
    workers=4,
    worker_timeout=600.0,
    claim_batches=50,
    claim_limit=100,
    finished_postgres=10_000_000,
    finished_sqlite=1_000_000,
    memory_from=10_000,
    memory_to=1_000_000,
    pruned=1_000_000,
)
QUICK = Sizes(
    quick=True,
    raw_rows=500,
    raw_seconds=0.5,
    enqueue_jobs=500,
    bulk_total=10_000,
    bulk_chunk=5_000,
    process_jobs=5_000,
    rounds=1,
    enqueue_rounds=2,
    bare_batch=100,
    pickup_jobs=100,
    pickup_gap=0.020,
    workers=4,
    worker_timeout=120.0,
    claim_batches=20,
    claim_limit=100,
    finished_postgres=200_000,
    finished_sqlite=100_000,
    memory_from=2_000,
    memory_to=10_000,
    pruned=50_000,
)


@dataclass(frozen=True)
class Row:
    """One line of a result table, already formatted. ``met`` is None for a
    figure with no target, or one whose target could not be judged."""

    figure: str
    value: str
    ratio: str
    target: str
    met: bool | None
    detail: str


@dataclass(frozen=True)
class Processing:
    """Worker processes draining a full queue."""

    label: str
    jobs: int
    processes: int
    first_claim_seconds: float  # first worker process start -> first job taken
    wall_seconds: float  # first worker process start -> last job completed
    exit_seconds: float | None  # first worker process start -> the last process exits
    steady_rate: float | None  # completions/s between the 10% and 90% completions
    cpu: CpuSplit

    @property
    def wall_rate(self) -> float:
        return self.jobs / self.wall_seconds

    def detail(self) -> str:
        procs = f"{self.processes} processes" if self.processes > 1 else "1 process"
        exit_part = "" if self.exit_seconds is None else f", exit at {self.exit_seconds:.2f} s"
        return (
            f"{self.jobs:,} jobs in {self.wall_seconds:.2f} s from process start "
            f"(first job at {self.first_claim_seconds:.2f} s{exit_part}); {procs}"
        )


@dataclass(frozen=True)
class Latency:
    """Seconds from just before each enqueue call to the handler's start."""

    seconds: list[float]
    exit_code: int | None

    @property
    def p50_ms(self) -> float:
        return percentile(self.seconds, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.seconds, 99) * 1000

    def detail(self, gap: float) -> str:
        return (
            f"{len(self.seconds)} jobs ~{gap * 1000:.0f} ms apart, enqueue call -> handler start; "
            f"mean {statistics.fmean(self.seconds) * 1000:.1f} ms, "
            f"max {max(self.seconds) * 1000:.1f} ms; exit on SIGTERM: {self.exit_code}"
        )


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


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def median_run(runs: Sequence[Processing]) -> Processing:
    """The run with the median wall rate (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda r: r.wall_rate)
    return ordered[(len(ordered) - 1) // 2]


def runs_note(runs: Sequence[Processing]) -> str:
    if len(runs) < 2:
        return "1 run"
    rates = ", ".join(f"{r.wall_rate:,.0f}" for r in runs)
    return f"median of {len(runs)} runs ({rates} /s)"


def attempt(rows: list[Row], what: str, measure: Callable[[], T]) -> T | None:
    """``measure()``, or None after a row saying why it failed: one measurement
    that fails (a worker that dies, Instar changing under the bench) leaves the
    others to run. Ctrl-C still ends the run."""
    try:
        return measure()
    except Exception as error:  # reported in the table; the run goes on
        first = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {first[0] if first else ''}"
        progress.print(f"[red]{what} failed:[/] {error}", markup=True, highlight=False)
        rows.append(Row(what, "failed", "-", "-", None, reason[:300]))
        return None


def judged(
    figure: str,
    shown: str,
    value: float,
    base: float | None,
    against: str,
    target: str,
    need: float | None,
    detail: str,
    *,
    at_most: bool = False,
) -> Row:
    """A row whose ratio is ``value / base``, met when it is at least (or at most)
    ``need``; not judged when the base could not be measured."""
    if base is None or base <= 0:
        note = f"{detail}; {against}: not measured"
        return Row(figure, shown, f"? x {against}", target, None, note)
    r = value / base
    met = None if need is None else (r <= need if at_most else r >= need)
    return Row(figure, shown, f"{r:.2f}x {against}", target, met, detail)


def pickup_offsets(jobs: int, gap: float) -> list[float]:
    """When to enqueue each job, from the first: gaps drawn +-50% around ``gap``
    (a fixed seed, so every run and every queue gets the same schedule), so that
    no polling period lines up with the enqueues."""
    draw = random.Random(15)
    offsets, at = [], 0.0
    for _ in range(jobs):
        offsets.append(at)
        at += gap * draw.uniform(0.5, 1.5)
    return offsets


def read_stamps(path: Path) -> list[tuple[float, float]]:
    """``<sent> <started>`` lines a stamping handler wrote, in the order written."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    pairs = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            pairs.append((float(parts[0]), float(parts[1])))
    return pairs


def code_note() -> str:
    """The Instar measured: what ``run.py`` snapshot at the start, else the checkout."""
    note = os.environ.get("INSTAR_BENCH_CODE")
    if note:
        return note
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "?"
    return f"git {head or '?'}{' + local changes' if dirty else ''}"


# -- processes -----------------------------------------------------------------


def bench_env(**extra: str) -> dict[str, str]:
    """The environment of every process the bench starts: the repository on the
    path (for ``bench.*``), plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def tool(name: str) -> Path | None:
    """A console script of this environment (``instar``, ``pgq``, ``huey_consumer``)."""
    path = Path(sys.executable).parent / name
    return path if path.exists() else None


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def instar_worker_command(url: str, *, burst: bool, processes: int = 1) -> list[str]:
    """``instar worker`` as a user runs it: the default concurrency, no --quiet;
    ``processes`` above 1 forks that many (``--processes``)."""
    cli = tool("instar")
    command = [str(cli)] if cli else [sys.executable, "-m", "instar.cli.main"]
    command += ["worker", "--app", APP_REF, "--database", url]
    command += ["--processes", str(processes)] if processes > 1 else []
    return [*command, "--burst"] if burst else command


@contextmanager
def started(
    command: list[str], log_path: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess that is always stopped: SIGTERM, then SIGKILL if it lingers."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
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
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(the log is empty)"


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    poll: float = 0.005,
) -> None:
    """Poll ``condition`` until true; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise BenchError(f"process exited ({proc.returncode}) while {what}:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s {what}:\n{log_tail(log)}")
        time.sleep(poll)


@dataclass(frozen=True)
class Timed:
    """When a group of processes started and exited (``time.time()``) and the CPU they took."""

    start: float
    exited: float
    cpu: CpuSplit
    logs: list[Path]


def run_to_exit(
    commands: list[list[str]],
    logs: list[Path],
    env: dict[str, str],
    timeout: float,
    label: str,
    *,
    server_cpu: bool,
) -> Timed:
    """Start ``commands`` together and wait until every one has exited, with status 0."""
    with ExitStack() as stack:
        meter = CpuMeter(server=server_cpu)
        start = time.time()
        procs = [
            stack.enter_context(started(command, log, env))
            for command, log in zip(commands, logs, strict=True)
        ]
        deadline = time.monotonic() + timeout
        for proc, log in zip(procs, logs, strict=True):
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise BenchError(
                    f"{label}: still running after {timeout:.0f}s:\n{log_tail(log)}"
                ) from None
            if proc.returncode != 0:
                raise BenchError(f"{label}: exited {proc.returncode}:\n{log_tail(log)}")
        exited = time.time()
    return Timed(start, exited, meter.stop(), logs)


def completion_stats(times: Sequence[float], start: float) -> tuple[float, float | None]:
    """(last completion - start, completions/s between the 10% and 90% ones)."""
    n = len(times)
    low, high = round(0.1 * (n - 1)), round(0.9 * (n - 1))
    span = times[high] - times[low]
    steady = (high - low) / span if span > 0 else None
    return times[-1] - start, steady


# -- Instar --------------------------------------------------------------------


def bulk_enqueue(url: str, total: int, chunk: int, name: str = "noop_sync") -> float:
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
        defn = app.definition("noop_sync")
        start = time.perf_counter()
        for _ in range(jobs):
            defn.enqueue()
        return jobs / (time.perf_counter() - start)


@dataclass(frozen=True)
class EnqueueTurns:
    """The raw limit (rows/s) and Instar's enqueue one by one (jobs/s), one of
    each per round, in turns: the disk's commit time drifts by a fifth within
    minutes here, so a ratio of two runs minutes apart says more about the
    drift than about Instar."""

    raw: list[float]
    enqueues: list[float]
    raw_rows: int  # in the first raw round

    @property
    def raw_rate(self) -> float:
        return statistics.median(self.raw)

    @property
    def enqueue_rate(self) -> float:
        return statistics.median(self.enqueues)


def enqueue_in_turns(
    rounds: int, raw: Callable[[int], tuple[float, int]], enqueue: Callable[[], float]
) -> EnqueueTurns:
    """``rounds`` rounds of ``raw(r)`` (rows/s and rows, on a fresh table) then
    ``enqueue()`` (jobs/s)."""
    raws: list[float] = []
    enqueues: list[float] = []
    raw_rows = 0
    for r in range(rounds):
        found, rows = raw(r)
        raws.append(found)
        raw_rows = raw_rows or rows
        enqueues.append(enqueue())
    return EnqueueTurns(raws, enqueues, raw_rows)


def enqueue_against_raw(
    rows: list[Row],
    measure: Callable[[], EnqueueTurns],
    raw_what: str,
    raw_how: str,
    need: float,
) -> float | None:
    """``measure()``, then the raw limit's row and the enqueue's, judged against
    the raw limit (at least ``need``); the raw limit (rows/s), or None when the
    measurement failed (a row says why)."""
    found = attempt(rows, "raw limit and enqueue one by one", measure)
    if found is None:
        return None

    def runs(values: Sequence[float]) -> str:
        return f"median of {len(values)} ({', '.join(f'{v:,.0f}' for v in values)} /s)"

    commit_ms = 1000 / found.raw_rate
    rows += [
        Row(
            f"raw limit: {raw_what}",
            rate(found.raw_rate),
            "1.00x raw",
            "-",
            None,
            f"{runs(found.raw)}, in turns with enqueue one by one; {found.raw_rows:,} rows, "
            f"{raw_how}; {commit_ms:.2f} ms per commit",
        ),
        judged(
            "enqueue one by one",
            rate(found.enqueue_rate),
            found.enqueue_rate,
            found.raw_rate,
            "raw",
            f">= {need:.2f}x raw",
            need,
            f"{runs(found.enqueues)}; defn.enqueue() each",
        ),
    ]
    return found.raw_rate


def instar_drain(
    url: str,
    query: Query,
    tmp: Path,
    label: str,
    sizes: Sizes,
    processes: int = 1,
    *,
    forked: bool = False,
    server_cpu: bool = False,
    metrics: bool = False,
) -> Processing:
    """Time ``processes`` burst workers (``instar worker --burst``, default
    concurrency), started together, draining the jobs already queued: as many
    commands, or with ``forked`` one command that forks them
    (``--processes``); with ``metrics``, each serving its Prometheus metrics
    (``--metrics-port``).

    ``query`` reads the events the workers wrote: the wall time runs from the
    first process start to the last ``completed`` event.
    """
    n = int(query("SELECT count(*) FROM jobs WHERE state = 'ready'")[0][0])
    if forked:
        logs = [tmp / f"{label}.log"]
        commands = [instar_worker_command(url, burst=True, processes=processes)]
    else:
        logs = [tmp / f"{label}-{i}.log" for i in range(processes)]
        commands = [instar_worker_command(url, burst=True) for _ in logs]
    if metrics:
        commands = [[*command, "--metrics-port", str(free_port())] for command in commands]
    timed = run_to_exit(
        commands, logs, bench_env(), sizes.worker_timeout, f"instar {label}", server_cpu=server_cpu
    )
    since = f"at >= {timed.start!r}"  # earlier events, if any, are not this run's
    completed = f"SELECT at FROM events WHERE to_state = 'completed' AND {since} ORDER BY at"
    times = [float(at) for (at,) in query(completed)]
    first = query(f"SELECT min(at) FROM events WHERE to_state = 'running' AND {since}")[0][0]
    if len(times) != n:
        raise BenchError(f"{label}: {len(times)} of {n} jobs completed:\n{log_tail(logs[0])}")
    wall, steady = completion_stats(times, timed.start)
    first_at = timed.start if first is None else float(first)
    return Processing(
        label,
        n,
        processes,
        first_at - timed.start,
        wall,
        timed.exited - timed.start,
        steady,
        timed.cpu,
    )


def instar_pickup(url: str, tmp: Path, sizes: Sizes, label: str) -> Latency:
    """Enqueue from this process, one job at a time, to an idle ``instar worker``
    in another; the ``stamp`` handler records when it starts."""
    stamps = tmp / f"{label}-stamps.txt"
    log = tmp / f"{label}.log"
    with make_app(url) as app:
        app.engine  # migrate before the worker starts  # noqa: B018
        defn = app.definition("stamp")
        env = bench_env(INSTAR_BENCH_STAMPS=str(stamps))
        with started(instar_worker_command(url, burst=False), log, env) as proc:
            # A first job, then a pause: the worker is up, past its first turns and idle.
            defn.enqueue(sent=time.time())
            wait_for(lambda: len(read_stamps(stamps)) >= 1, 60, "starting", proc, log)
            time.sleep(0.5)
            first = time.monotonic()
            for offset in pickup_offsets(sizes.pickup_jobs, sizes.pickup_gap):
                sleep_until(first + offset)
                defn.enqueue(sent=time.time())
            total = sizes.pickup_jobs + 1
            wait_for(lambda: len(read_stamps(stamps)) >= total, 60, "running", proc, log)
            stop_process(proc)
            code = proc.returncode
    pairs = read_stamps(stamps)[1:]
    return Latency([started_at - sent for sent, started_at in pairs], code)


# -- claiming beside finished jobs -------------------------------------------------


# The claim batches leave their jobs running under a worker that never was;
# finish them as a worker would have, so they join the finished rows.
FINISH_CLAIMED = """
UPDATE jobs SET state = 'completed', result = 'null', lease_token = NULL,
                lease_expires_at = NULL, version = version + 1
WHERE state = 'running'
"""


@dataclass(frozen=True)
class Claims:
    """Claiming batches of ready jobs through the engine, one transaction each."""

    batch_ms: list[float]
    limit: int

    @property
    def median_ms(self) -> float:
        return statistics.median(self.batch_ms)

    @property
    def claims_per_second(self) -> float:
        return self.limit / (self.median_ms / 1000)

    def detail(self) -> str:
        return (
            f"median of {len(self.batch_ms)} claims of {self.limit} "
            f"({self.median_ms:.2f} ms; p90 {percentile(self.batch_ms, 90):.2f} ms)"
        )


def claim_batches(urls: Sequence[str], sizes: Sizes) -> list[Claims] | str:
    """Claims of ``claim_limit`` jobs through Instar's engine (the call a worker's
    turn makes) in each database of ``urls``, taking turns claim by claim so that
    a change in the machine's load touches them all alike; the jobs must be
    queued. Instar's internals move while it is being made faster: when this call
    no longer fits, the reason is returned instead (the processing figure beside
    it still judges the target)."""
    warmup = 2  # first claims: connection, prepared statements, caches
    try:
        from instar.store.contract import ClaimRequest

        with ExitStack() as stack:
            apps = [stack.enter_context(make_app(url)) for url in urls]
            timings: list[list[float]] = [[] for _ in urls]
            for i in range(warmup + sizes.claim_batches):
                for app, times in zip(apps, timings, strict=True):
                    request = ClaimRequest("bench-claimer", sizes.claim_limit, None)
                    start = time.perf_counter()
                    batch = app.engine.exchange([], [], request)
                    elapsed = time.perf_counter() - start
                    if len(batch.claimed) != sizes.claim_limit:
                        raise BenchError(f"a claim took {len(batch.claimed)} jobs")
                    if i >= warmup:
                        times.append(elapsed * 1000)
    except (ImportError, AttributeError, TypeError) as error:
        return f"not measured: the engine's claim call changed ({type(error).__name__}: {error})"
    return [Claims(times, sizes.claim_limit) for times in timings]


@dataclass(frozen=True)
class Finished:
    """A table with no finished jobs beside one with ``rows`` of them: claims
    taken in turns, then one burst worker draining ``process_jobs`` in each."""

    rows: int
    insert_seconds: float
    claims: list[Claims] | str  # [no finished jobs, rows finished jobs]
    plans: tuple[str, str]
    drains: tuple[list[Processing], list[Processing]]  # runs taking turns: without, with


def finished_rows(found: Finished, commit_ms: float | None) -> list[Row]:
    """The claiming rows and the processing row of a ``Finished`` comparison."""
    n = found.rows
    empty_plan, full_plan = (f"; {plan}" if plan else "" for plan in found.plans)
    rows: list[Row] = []
    if isinstance(found.claims, str):
        rows.append(
            Row(f"claim, {n:,} finished", "-", "-", ">= 0.90x 0 finished", None, found.claims)
        )
    else:
        empty, full = found.claims
        rows.append(
            Row(
                f"claim {empty.limit} (engine call), 0 finished",
                f"{empty.claims_per_second:,.0f} claims/s",
                f"{empty.median_ms / commit_ms:.1f} commits" if commit_ms else "-",
                "-",
                None,
                empty.detail() + empty_plan,
            )
        )
        rows.append(
            judged(
                f"claim {full.limit} (engine call), {n:,} finished",
                f"{full.claims_per_second:,.0f} claims/s",
                full.claims_per_second,
                empty.claims_per_second,
                "0 finished",
                ">= 0.90x 0 finished",
                0.9,
                f"{full.detail()}; claims taken in turns with the table without; the finished "
                f"rows took {found.insert_seconds:.1f} s (one INSERT ... SELECT, jobs table "
                f"only){full_plan}",
            )
        )
    nones, manys = found.drains
    none, many = median_run(nones), median_run(manys)
    rows.append(
        judged(
            f"processing, def no-op, 1 process, {n:,} finished: wall",
            rate(many.wall_rate),
            many.wall_rate,
            none.wall_rate,
            "0 finished",
            ">= 0.90x 0 finished",
            0.9,
            f"{runs_note(manys)}; {many.detail()}; runs taking turns with the table "
            f"without ({runs_note(nones)}: {rate(none.wall_rate)})",
        )
    )
    return rows


# -- the table ---------------------------------------------------------------------


def render(title: str, caption: str, rows: list[Row]) -> Table:
    table = Table(title=title, caption=caption, caption_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("ratio (judged by)", justify="right")
    table.add_column("target", justify="right")
    table.add_column("met", justify="center")
    table.add_column("detail")
    for row in rows:
        if row.met is None:
            met = "" if row.target == "-" else "[yellow]n/a[/]"
        else:
            met = "[green]yes[/]" if row.met else "[red]NO[/]"
        table.add_row(row.figure, row.value, row.ratio, row.target, met, row.detail)
    return table


def cpu_table(title: str, runs: Sequence[Processing]) -> Table:
    """How the CPU split between the workers, the server and the rest, per run:
    CPU seconds (and the share of ``cores x wall``) from the first process start
    until the last one exited."""
    caption = (
        "CPU seconds (share of cores x wall) from the first process start until the last "
        "exited. workers: the worker processes, exact (getrusage of the reaped children); "
        "postgres: every postgres process on this machine, its background processes and "
        "its other clients' sessions included; other: the rest of the machine (this bench "
        "process, anything else running)."
    )
    table = Table(title=title, caption=caption, caption_justify="left")
    table.add_column("run")
    for name in ("wall", "jobs/s", "workers", "postgres", "other", "idle"):
        table.add_column(name, justify="right")
    table.add_column("CPU ms per job: workers + postgres", justify="right")
    for run in runs:
        cpu = run.cpu
        server = "?" if cpu.server is None else cpu.share(cpu.server)
        per_job = f"{cpu.workers / run.jobs * 1000:.2f} + " + (
            "?" if cpu.server is None else f"{cpu.server / run.jobs * 1000:.2f}"
        )
        table.add_row(
            run.label,
            f"{cpu.wall:.1f} s",
            f"{run.wall_rate:,.0f}",
            cpu.share(cpu.workers),
            server,
            cpu.share(cpu.other),
            cpu.share(cpu.idle),
            per_job,
        )
    return table


# -- retention: pruning old finished jobs ------------------------------------------

OLD = 8 * 86_400.0
"""How far back the finished jobs to prune are put: past the default retention
of completed jobs (seven days)."""

# The three events of each finished job (enqueued, claimed, completed), in one
# statement; the same SQL on both backends.
OLD_EVENTS = """
INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt)
SELECT j.id, j.updated_at, s.from_state, s.to_state, s.trigger, s.attempt
FROM jobs AS j CROSS JOIN (
    SELECT CAST(NULL AS TEXT) AS from_state, 'ready' AS to_state, 'enqueued' AS trigger,
           0 AS attempt
    UNION ALL SELECT 'ready', 'running', 'claimed', 1
    UNION ALL SELECT 'running', 'completed', 'completed', 1
) AS s
WHERE j.state = 'completed'
ORDER BY j.id
"""

# The state-flow rollup has counted every event so far (pruning waits for it).
ROLLED_UP = """
INSERT INTO rollups (name, event_id) SELECT 'state_flows', max(id) FROM events WHERE true
ON CONFLICT (name) DO UPDATE SET event_id = excluded.event_id
"""


@dataclass(frozen=True)
class Speeds:
    """Claims of ready jobs and one-by-one enqueues on one database, at one
    moment, each taken in turns with the same on a control database that never
    held the rows pruned (the control cancels the machine's drift between two
    moments)."""

    claims: Claims | str
    enqueues: list[float]  # jobs/s, one run each
    control_claims: Claims | str
    control_enqueues: list[float]

    def claims_against_control(self) -> float | None:
        if isinstance(self.claims, str) or isinstance(self.control_claims, str):
            return None
        return self.claims.claims_per_second / self.control_claims.claims_per_second

    def enqueues_against_control(self) -> float:
        return statistics.median(self.enqueues) / statistics.median(self.control_enqueues)


@dataclass(frozen=True)
class Pruned:
    """``rows`` old finished jobs pruned by ``instar prune``'s call: how long it
    took, and the speeds of claiming and enqueueing before and after."""

    rows: int
    pruned: int
    seconds: float
    before: Speeds
    after: Speeds


def _speeds(url: str, control: str, sizes: Sizes) -> Speeds:
    for each in (url, control):
        bulk_enqueue(each, (2 + sizes.claim_batches) * sizes.claim_limit, sizes.bulk_chunk)
    found = claim_batches([url, control], sizes)
    claims = found if isinstance(found, str) else found[0]
    control_claims = found if isinstance(found, str) else found[1]
    jobs = max(100, sizes.enqueue_jobs // 3)
    enqueues, control_enqueues = [], []
    for _ in range(5):
        enqueues.append(enqueue_one_by_one(url, jobs))
        control_enqueues.append(enqueue_one_by_one(control, jobs))
    return Speeds(claims, enqueues, control_claims, control_enqueues)


def pruning(
    url: str, control: str, sizes: Sizes, fill: Callable[[], None], settle: Callable[[], None]
) -> Pruned:
    """``fill()`` adds ``sizes.pruned`` finished jobs older than retention to
    ``url``, with their events, counted by the rollup already; ``settle()`` runs
    before each speed measurement (PostgreSQL: the VACUUM ANALYZE that autovacuum
    would run after so many deletes). Speeds before, the whole prune timed (the
    call ``instar prune`` makes, default retention), speeds after; each speed in
    turns with ``control``, a database that never held those jobs."""
    from instar.maintenance.pruning import prune_all
    from instar.retention import Retention

    for each in (url, control):
        with make_app(each) as app:
            app.engine  # noqa: B018  (creates and migrates)
    fill()
    settle()
    before = _speeds(url, control, sizes)
    with make_app(url) as app:
        start = time.perf_counter()
        report = prune_all(app.engine, Retention())
        seconds = time.perf_counter() - start
    settle()
    after = _speeds(url, control, sizes)
    return Pruned(sizes.pruned, sum(report.pruned.values()), seconds, before, after)


def pruning_rows(found: Pruned) -> list[Row]:
    """The pruning rate, and claiming and enqueueing after pruning against before."""
    n = f"{found.rows:,}"
    rows = [
        Row(
            f"pruning {n} finished jobs (3 events each)",
            f"{found.pruned / found.seconds:,.0f} jobs/s",
            "-",
            "-",
            None,
            f"{found.pruned:,} pruned in {found.seconds:.1f} s by prune_all (instar prune), "
            "default retention, windows of 2,000 jobs, one transaction each",
        )
    ]
    before, after = found.before, found.after
    claims_before, claims_after = before.claims_against_control(), after.claims_against_control()
    if claims_before is not None and claims_after is not None:
        assert isinstance(after.claims, Claims) and isinstance(before.claims, Claims)
        rows.append(
            judged(
                f"claim {after.claims.limit} (engine call), after pruning {n}",
                f"{after.claims.claims_per_second:,.0f} claims/s",
                claims_after,
                claims_before,
                "before",
                ">= 0.90x before",
                0.9,
                f"each against a table that never held them, in turns: "
                f"{claims_after:.2f}x it after, {claims_before:.2f}x before; after "
                f"{after.claims.detail()}; before {before.claims.claims_per_second:,.0f} "
                f"claims/s ({before.claims.detail()})",
            )
        )
    else:
        reason = next(
            c for c in (before.claims, after.claims, before.control_claims) if isinstance(c, str)
        )
        rows.append(
            Row(f"claim, after pruning {n}", "-", "-", ">= 0.90x before", None, str(reason))
        )
    enqueue_before, enqueue_after = (
        before.enqueues_against_control(),
        after.enqueues_against_control(),
    )
    a = statistics.median(after.enqueues)
    rows.append(
        judged(
            f"enqueue one by one, after pruning {n}",
            f"{a:,.0f} /s",
            enqueue_after,
            enqueue_before,
            "before",
            ">= 0.90x before",
            0.9,
            f"each against a table that never held them, in turns: {enqueue_after:.2f}x it "
            f"after, {enqueue_before:.2f}x before; after: median of {len(after.enqueues)} runs "
            f"({', '.join(f'{v:,.0f}' for v in after.enqueues)} /s); before: "
            f"{statistics.median(before.enqueues):,.0f} /s "
            f"({', '.join(f'{v:,.0f}' for v in before.enqueues)})",
        )
    )
    return rows
