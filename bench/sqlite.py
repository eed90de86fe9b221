"""Instar on SQLite, beside the raw commit rate of plain ``sqlite3``, the bare
claim/complete/event loop and huey (``SqliteHuey``), all measured in this run.

Every measurement gets a new database file in the run's temporary folder.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import statistics
import time
from collections.abc import Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench import dashboard, peers
from bench.bare import bare_sqlite
from bench.harness import (
    FINISH_CLAIMED,
    OLD,
    OLD_EVENTS,
    ROLLED_UP,
    BenchError,
    EnqueueTurns,
    Finished,
    Processing,
    Pruned,
    Query,
    Row,
    Sizes,
    attempt,
    bench_env,
    bulk_enqueue,
    claim_batches,
    code_note,
    enqueue_against_raw,
    enqueue_in_turns,
    enqueue_one_by_one,
    finished_rows,
    instar_drain,
    instar_pickup,
    instar_worker_command,
    judged,
    load_note,
    log_tail,
    median_run,
    progress,
    pruning,
    pruning_rows,
    rate,
    runs_note,
    started,
)
from bench.noop_app import make_app
from bench.system import rss_bytes

# Old finished jobs, as the engine leaves them, in one statement.
INSERT_FINISHED = """
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :rows)
INSERT INTO jobs (name, queue, state, priority, attempt, max_attempts, args, result,
                  created_at, updated_at, lease_seconds, version)
SELECT 'noop_sync', 'default', 'completed', 0, 1, 3, '{}', 'null',
       :now - 86400 + n * 0.001, :now - 86400 + n * 0.001 + 0.05, 30, 2
FROM g
"""

MIB = 1024 * 1024


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


def reader(conn: sqlite3.Connection) -> Query:
    """A plain connection for measurement only: Instar's API has no timeline-wide query."""

    def query(sql: str) -> Sequence[Sequence[Any]]:
        return conn.execute(sql).fetchall()

    return query


@dataclass(frozen=True)
class Memory:
    """RSS of one burst worker along a long run: (job, RSS bytes) at each mark."""

    samples: list[tuple[int, int]]
    peak: int
    seconds: float  # from the first mark to the last

    @property
    def growth(self) -> float:
        first, last = self.samples[0][1], self.samples[-1][1]
        return (last - first) / first

    def trajectory(self) -> str:
        return ", ".join(f"job {job:,}: {rss / MIB:.1f}" for job, rss in self.samples) + " MiB"


def counting_cost(tmp: Path) -> float:
    """Seconds of CPU a worker's metrics spend on one job (claimed, started,
    ended), timed in this process over batches of 100 claimed jobs."""
    from prometheus_client import CollectorRegistry

    from instar.engine import Returned, outcome_moves
    from instar.metrics import WorkerMetrics
    from instar.store.contract import ClaimRequest

    with make_app(sqlite_url(tmp / "counting.db")) as app:
        app.migrate()
        app.enqueue_many("noop_sync", [{}] * 100)
        jobs = app.engine.exchange([], [], ClaimRequest("bench", 100, None)).claimed
        now = app.clock.now()
        moves = [
            move
            for job in jobs
            for move in outcome_moves(
                job, Returned(None), retry=app.definition("noop_sync").options.retry, now=now,
                max_payload_bytes=1024,
            )
        ]  # fmt: skip
        metrics = WorkerMetrics(CollectorRegistry(), app.clock)

        def batch() -> None:
            metrics.claimed(jobs)
            for job in jobs:
                metrics.started(job)
            metrics.moved(moves)

        rounds = 2000
        timings = []
        for _ in range(3):
            start = time.process_time()
            for _ in range(rounds):
                batch()
            timings.append(time.process_time() - start)
        return min(timings) / rounds / len(jobs)


METRICS_ROUNDS = 5
"""Pairs of runs (without, with metrics) that measure what counting costs."""
METRICS_JOBS_FACTOR = 5
"""Those runs drain this many times ``process_jobs``: the CPU a worker spends
starting (imports, and the metrics' server for one of the pair) weighs on a
job's share in proportion to how few jobs follow."""


class SqliteBench:
    """The SQLite measurements, each in a new file under ``tmp``."""

    def __init__(self, sizes: Sizes, tmp: Path) -> None:
        self.sizes = sizes
        self.tmp = tmp
        self.load_at_start = os.getloadavg()[0]
        self.huey_note = ""

    def path(self, name: str) -> Path:
        return self.tmp / f"{name}.db"

    def instar_processing(
        self, handler: str, label: str, *, metrics: bool = False, jobs: int | None = None
    ) -> Processing:
        path = self.path(label)
        url = sqlite_url(path)
        bulk_enqueue(url, jobs or self.sizes.process_jobs, self.sizes.bulk_chunk, handler)
        with closing(sqlite3.connect(path, timeout=30)) as conn:
            return instar_drain(url, reader(conn), self.tmp, label, self.sizes, metrics=metrics)

    def metrics_cost(self, rows: list[Row]) -> None:
        """What a worker serving Prometheus metrics pays for counting: its CPU
        per job with them against without, in pairs of longer runs taken in
        turns (a run's wall rate swings by a third here from run to run, its
        CPU per job by a tenth; the median of the pairs' ratios is steadier)."""

        jobs = self.sizes.process_jobs * METRICS_JOBS_FACTOR

        def pair(r: int) -> tuple[Processing, Processing]:
            return (
                self.instar_processing("noop_sync", f"plain-{r}", jobs=jobs),
                self.instar_processing("noop_sync", f"metered-{r}", metrics=True, jobs=jobs),
            )

        pairs: list[tuple[Processing, Processing]] = []
        for r in range(1, METRICS_ROUNDS + 1):
            progress.print(f"SQLite: metrics' cost, pair {r} of {METRICS_ROUNDS} ...")
            found = attempt(rows, f"metrics' cost, pair {r}", partial(pair, r))
            pairs += [found] if found else []
        if not pairs:
            return
        ratios = [m.cpu.workers / m.jobs / (p.cpu.workers / p.jobs) for p, m in pairs]
        plain = statistics.median(p.cpu.workers / p.jobs for p, _ in pairs)
        metered = statistics.median(m.cpu.workers / m.jobs for _, m in pairs)
        rows.append(
            judged(
                "worker CPU per job, serving metrics",
                f"{metered * 1e6:,.0f} µs",
                statistics.median(ratios),
                1.0,
                "without",
                "-",
                None,
                f"median of {len(pairs)} pairs' ratios ({', '.join(f'{x:.2f}' for x in ratios)}); "
                f"without metrics {plain * 1e6:,.0f} µs a job; instar worker --burst "
                "--metrics-port, def no-op: every claim, run end and heartbeat counted",
            )
        )
        counting = attempt(rows, "counting's cost", lambda: counting_cost(self.tmp))
        if counting is not None:
            rows.append(
                judged(
                    "  of which counting, measured alone",
                    f"{counting * 1e6:.1f} µs a job",
                    counting,
                    plain,
                    "a job",
                    "<= 0.05x a job",
                    0.05,
                    "WorkerMetrics' claimed, started and moved over batches of 100 jobs, "
                    "min of 3 timings: what the worker calls per job when serving metrics "
                    "(the pairs above swing by more than this between runs)",
                    at_most=True,
                )
            )

    def finished(self, rows: int) -> Finished:
        """A database with no finished jobs and one with ``rows`` of them, side by
        side: claims taken in turns, then burst workers taking turns between them
        (``rounds`` in each, the table without first; later rounds there find the
        few thousand jobs of the earlier ones)."""
        sizes = self.sizes
        paths = [self.path("finished-0"), self.path(f"finished-{rows}")]
        urls = [sqlite_url(path) for path in paths]
        with ExitStack() as stack:
            conns = [
                stack.enter_context(closing(sqlite3.connect(p, isolation_level=None, timeout=30)))
                for p in paths
            ]
            for url in urls:
                with make_app(url) as app:
                    app.engine  # noqa: B018  (creates and migrates)
            start = time.perf_counter()
            conns[1].execute("BEGIN")
            conns[1].execute(INSERT_FINISHED, {"rows": rows, "now": time.time()})
            conns[1].execute("COMMIT")
            inserted = time.perf_counter() - start
            for url in urls:
                bulk_enqueue(url, (2 + sizes.claim_batches) * sizes.claim_limit, sizes.bulk_chunk)
            claims = claim_batches(urls, sizes)
            drains: tuple[list[Processing], list[Processing]] = ([], [])
            for r in range(1, sizes.rounds + 1):
                for url, conn, runs, what in zip(
                    urls, conns, drains, ("0", str(rows)), strict=True
                ):
                    if r == 1:
                        conn.execute(FINISH_CLAIMED)
                    bulk_enqueue(url, sizes.process_jobs, sizes.bulk_chunk, "noop_sync")
                    label = f"finished-{what}-{r}"
                    runs.append(instar_drain(url, reader(conn), self.tmp, label, sizes))
        return Finished(rows, inserted, claims, ("", ""), drains)

    def pruned(self) -> Pruned:
        """Old finished jobs pruned; claiming and enqueueing before and after."""
        path = self.path("pruning")

        def fill() -> None:
            with closing(sqlite3.connect(path, isolation_level=None, timeout=30)) as conn:
                conn.execute("BEGIN")
                conn.execute(INSERT_FINISHED, {"rows": self.sizes.pruned, "now": time.time() - OLD})
                conn.execute(OLD_EVENTS)
                conn.execute(ROLLED_UP)
                conn.execute("COMMIT")

        control = sqlite_url(self.path("pruning-control"))
        return pruning(sqlite_url(path), control, self.sizes, fill, lambda: None)

    def dashboard(self, rows: list[Row]) -> None:
        """The dashboard's pages over ``sizes.pruned`` finished jobs."""
        path = self.path("dashboard")

        def fill() -> None:
            with closing(sqlite3.connect(path, isolation_level=None, timeout=30)) as conn:
                conn.execute("BEGIN")
                conn.execute(INSERT_FINISHED, {"rows": self.sizes.pruned, "now": time.time()})
                conn.execute("COMMIT")

        dashboard.run(rows, self.sizes, sqlite_url(path), "SQLite", fill, None)

    def memory(self) -> Memory:
        """One burst worker through ``memory_to`` jobs (and a tail, so it is still
        running at the last sample); its RSS when job ``memory_from``, a few jobs
        between, and job ``memory_to`` (by id: jobs are claimed in id order) have
        completed."""
        sizes = self.sizes
        tail = max(2_000, sizes.memory_to // 100)
        path = self.path("memory")
        url = sqlite_url(path)
        bulk_enqueue(url, sizes.memory_to + tail, 50_000, "noop_sync")
        log = self.tmp / "memory.log"
        between = (sizes.memory_to // 10, sizes.memory_to // 4, sizes.memory_to // 2)
        jobs = sorted(
            {sizes.memory_from, sizes.memory_to} | {j for j in between if j > sizes.memory_from}
        )
        with closing(sqlite3.connect(path, timeout=30)) as conn:
            first_id = int(conn.execute("SELECT min(id) FROM jobs").fetchone()[0])
            samples: list[tuple[int, int]] = []
            times: list[float] = []
            peak = 0
            command = instar_worker_command(url, burst=True)
            with started(command, log, bench_env()) as proc:
                last_sample = 0.0
                for job in jobs:
                    while True:
                        found = conn.execute(
                            "SELECT state FROM jobs WHERE id = ?", (first_id + job - 1,)
                        )
                        if found.fetchone()[0] == "completed":
                            rss = rss_bytes(proc.pid)
                            if rss is None:
                                raise BenchError("memory: the worker exited too early")
                            samples.append((job, rss))
                            times.append(time.monotonic())
                            peak = max(peak, rss)
                            break
                        if proc.poll() is not None:
                            raise BenchError(f"memory: worker exited:\n{log_tail(log)}")
                        if time.monotonic() - last_sample > 1.0:
                            peak = max(peak, rss_bytes(proc.pid) or 0)
                            last_sample = time.monotonic()
                        time.sleep(0.02)
                proc.wait(sizes.worker_timeout)
        return Memory(samples, peak, times[-1] - times[0])

    # -- the table -----------------------------------------------------------------

    def run(self, rows: list[Row], *, memory: bool = True) -> None:
        """Take every measurement in turn, appending rows as they come; one that
        fails gets a row saying so, and the others still run."""
        sizes = self.sizes
        self.load_at_start = os.getloadavg()[0]

        progress.print("SQLite: raw sqlite3 commits and enqueue one by one, in turns ...")

        def in_turns() -> EnqueueTurns:
            return enqueue_in_turns(
                sizes.enqueue_rounds,
                lambda r: raw_limit(self.path(f"raw-{r}"), sizes),
                partial(enqueue_one_by_one, sqlite_url(self.path("enqueue")), sizes.enqueue_jobs),
            )

        raw = enqueue_against_raw(
            rows, in_turns, "sqlite3 BEGIN/INSERT/COMMIT", "WAL, synchronous=FULL", 0.8
        )
        commit_ms = 1000 / raw if raw else None

        progress.print("SQLite: bare claim/complete/event loop ...")
        bare = attempt(
            rows,
            "bare loop",
            lambda: bare_sqlite(self.path("bare"), sizes.process_jobs, sizes.bare_batch),
        )
        bare_rate = bare.rate if bare else None
        if bare:
            rows.append(
                judged(
                    "bare loop: claim/complete/event",
                    rate(bare.rate),
                    bare.rate,
                    raw,
                    "raw",
                    "-",
                    None,
                    bare.detail(),
                )
            )

        bulks: list[float] = []
        for r in range(1, sizes.rounds + 1):
            progress.print(f"SQLite: bulk enqueue, round {r} of {sizes.rounds} ...")
            url = sqlite_url(self.path(f"bulk-{r}"))
            found_bulk = attempt(
                rows,
                f"bulk enqueue, round {r}",
                partial(bulk_enqueue, url, sizes.bulk_total, sizes.bulk_chunk),
            )
            bulks += [found_bulk] if found_bulk is not None else []
        if bulks:
            bulk = statistics.median(bulks)
            rows.append(
                Row(
                    "bulk enqueue (enqueue_many)",
                    rate(bulk),
                    f"{bulk / 100_000:.2f}x 100,000 /s",
                    ">= 100,000 /s",
                    bulk >= 100_000,
                    f"median of {len(bulks)} ({', '.join(f'{b:,.0f}' for b in bulks)} /s); "
                    f"{sizes.bulk_total:,} jobs, {sizes.bulk_chunk:,} per call"
                    + (f"; {bulk / raw:.1f}x raw" if raw else ""),
                )
            )

        defs: list[Processing] = []
        asyncs: list[Processing] = []
        hueys: list[Processing] = []
        huey_missing = peers.missing("huey")
        if huey_missing is None:
            pragmas = attempt(
                rows, "huey's pragmas", lambda: peers.huey_pragmas(self.path("huey-pragmas"))
            )
            if pragmas:
                self.huey_note = (
                    f"SqliteHuey defaults: journal_mode={pragmas[0]}, synchronous={pragmas[1]}"
                )
        for r in range(1, sizes.rounds + 1):
            step = f"SQLite: processing, round {r} of {sizes.rounds}:"
            progress.print(f"{step} Instar def ...")
            found = attempt(
                rows,
                f"processing, def no-op, round {r}",
                partial(self.instar_processing, "noop_sync", f"def-{r}"),
            )
            defs += [found] if found else []
            if huey_missing is None:
                progress.print(f"{step} huey ...")
                found = attempt(
                    rows,
                    f"huey processing, round {r}",
                    partial(peers.huey_drain, self.tmp, f"huey-{r}", sizes, sizes.process_jobs),
                )
                hueys += [found] if found else []
            progress.print(f"{step} Instar async ...")
            found = attempt(
                rows,
                f"processing, async no-op, round {r}",
                partial(self.instar_processing, "noop", f"async-{r}"),
            )
            asyncs += [found] if found else []
        single = median_run(defs) if defs else None
        huey = median_run(hueys) if hueys else None
        if huey is not None:
            rows.append(
                judged(
                    "huey: processing, no-op task, 1 consumer: wall",
                    rate(huey.wall_rate),
                    huey.wall_rate,
                    bare_rate,
                    "bare",
                    "-",
                    None,
                    f"{runs_note(hueys)}; {huey.detail()}; huey_consumer defaults "
                    f"(1 worker thread); {self.huey_note}",
                )
            )
        elif huey_missing:
            rows.append(Row("huey", "-", "-", "-", None, huey_missing))
        if single is not None:
            detail = (
                f"{runs_note(defs)}; {single.detail()}; instar worker --burst, default concurrency"
            )
            rows.append(
                judged(
                    "processing, def no-op, 1 process: wall",
                    rate(single.wall_rate),
                    single.wall_rate,
                    huey.wall_rate if huey else None,
                    "huey",
                    ">= 3.00x huey",
                    3.0,
                    detail,
                )
            )
            rows.append(
                judged(
                    "  the same, against the bare loop",
                    rate(single.wall_rate),
                    single.wall_rate,
                    bare_rate,
                    "bare",
                    ">= 0.50x bare",
                    0.5,
                    "",
                )
            )
            if single.steady_rate is not None:
                rows.append(
                    judged(
                        "processing, def no-op, 1 process: steady",
                        rate(single.steady_rate),
                        single.steady_rate,
                        bare_rate,
                        "bare",
                        "-",
                        None,
                        "completions between the 10% and 90% ones, same run",
                    )
                )
        if asyncs:
            fast = median_run(asyncs)
            rows.append(
                judged(
                    "processing, async no-op, 1 process: wall",
                    rate(fast.wall_rate),
                    fast.wall_rate,
                    single.wall_rate if single else None,
                    "def",
                    ">= 1.00x def",
                    1.0,
                    f"{runs_note(asyncs)}; {fast.detail()}",
                )
            )

        self.metrics_cost(rows)
        progress.print("SQLite: pickup latency of an idle worker ...")
        url = sqlite_url(self.path("pickup"))
        latency = attempt(
            rows, "pickup latency", lambda: instar_pickup(url, self.tmp, sizes, "pickup")
        )
        if latency is not None:
            p50, p99 = latency.p50_ms, latency.p99_ms
            rows.append(
                Row(
                    "pickup latency p50 (across processes)",
                    f"{p50:.1f} ms",
                    f"{p50 / 5:.2f}x 5 ms",
                    "<= 5 ms",
                    p50 <= 5,
                    (f"{p50 / commit_ms:.1f} commits; " if commit_ms else "")
                    + latency.detail(sizes.pickup_gap),
                )
            )
            rows.append(
                judged(
                    "pickup latency p99",
                    f"{p99:.1f} ms",
                    p99,
                    p50,
                    "p50",
                    "<= 3.00x p50",
                    3.0,
                    "",
                    at_most=True,
                )
            )

        n = sizes.finished_sqlite
        progress.print(f"SQLite: claiming and processing, 0 and {n:,} finished jobs ...")
        beside = attempt(rows, f"claiming beside {n:,} finished jobs", partial(self.finished, n))
        if beside is not None:
            rows += finished_rows(beside, commit_ms)

        progress.print(f"SQLite: pruning {sizes.pruned:,} finished jobs ...")
        pruned = attempt(rows, "pruning", self.pruned)
        if pruned is not None:
            rows += pruning_rows(pruned)

        if memory:
            progress.print(
                f"SQLite: memory of one worker, job {sizes.memory_from:,} to "
                f"{sizes.memory_to:,} ..."
            )
            mem = attempt(rows, "memory", self.memory)
            if mem is not None:
                (job_from, rss_from), (job_to, rss_to) = mem.samples[0], mem.samples[-1]
                rows.append(
                    Row(
                        f"memory: RSS at job {job_from:,} -> job {job_to:,}",
                        f"{rss_from / MIB:.1f} -> {rss_to / MIB:.1f} MiB",
                        f"{mem.growth:+.1%}",
                        "< +10%",
                        mem.growth < 0.10,
                        f"one instar worker --burst, def no-op; {mem.trajectory()}; "
                        f"peak {mem.peak / MIB:.1f} MiB; "
                        f"{(job_to - job_from) / mem.seconds:,.0f} jobs/s in between",
                    )
                )

    def title(self) -> str:
        quick = " - QUICK RUN: smaller sizes, see the caption" if self.sizes.quick else ""
        return f"Instar on SQLite {sqlite3.sqlite_version} (WAL, synchronous=FULL){quick}"

    def caption(self) -> str:
        sizes = self.sizes
        quick = (
            f"Quick run: {sizes.process_jobs:,} jobs per processing run, "
            f"{sizes.finished_sqlite:,} finished rows (the full run: 1,000,000), memory from "
            f"job {sizes.memory_from:,} to {sizes.memory_to:,} (full: 10,000 to 1,000,000). "
            if sizes.quick
            else ""
        )
        return (
            f"{quick}Each processing figure: jobs queued first, then one worker process "
            f"timed from its start to the last completion; Instar and huey runs interleaved "
            f"({sizes.rounds} round(s)), medians shown. Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}, huey {peers.version('huey') or 'not installed'}"
            f"{f' ({self.huey_note})' if self.huey_note else ''}, "
            f"Instar {peers.version('instar')} ({code_note()}); "
            f"{os.cpu_count()} CPUs ({load_note(self.load_at_start)}), {platform.system()} "
            f"{platform.release()}, databases in {self.tmp.parent.parent}."
        )
