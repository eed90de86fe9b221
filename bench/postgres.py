"""Instar on PostgreSQL, beside what one plain psycopg connection manages on the
same server in the same run (autocommit single-row INSERTs), the bare
claim/complete/event loop, and pgqueuer.

Every measurement runs in a fresh schema (``?schema=bench_<pid>_<what>``;
pgqueuer's objects go there through its own ``PGQUEUER_SCHEMA`` setting),
dropped with ``DROP SCHEMA ... CASCADE`` as soon as it is done; whatever is
left when the run fails or is interrupted is dropped by ``drop_schemas``.

The server shares the machine's cores with the workers: every processing run
records the CPU seconds of the worker processes and of the PostgreSQL server
processes, printed as a second table.
"""

from __future__ import annotations

import os
import platform
import re
import signal
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg

from bench import dashboard, peers
from bench.bare import Bare, bare_postgres
from bench.harness import (
    FINISH_CLAIMED,
    OLD,
    OLD_EVENTS,
    ROLLED_UP,
    EnqueueTurns,
    Finished,
    Latency,
    Processing,
    Pruned,
    Query,
    Row,
    Sizes,
    attempt,
    bulk_enqueue,
    claim_batches,
    code_note,
    enqueue_against_raw,
    enqueue_in_turns,
    enqueue_one_by_one,
    finished_rows,
    instar_drain,
    instar_pickup,
    judged,
    load_note,
    median_run,
    progress,
    pruning,
    pruning_rows,
    rate,
    runs_note,
)
from bench.noop_app import make_app

# Old finished jobs, as the engine leaves them, in one statement (server side).
INSERT_FINISHED = """
INSERT INTO jobs (name, queue, state, priority, attempt, max_attempts, args, result,
                  created_at, updated_at, lease_seconds, version)
SELECT 'noop_sync', 'default', 'completed', 0, 1, 3, '{}', 'null',
       %(now)s - 86400 + g * 0.001, %(now)s - 86400 + g * 0.001 + 0.05, 30, 2
FROM generate_series(1, %(rows)s) AS g
"""


def claim_plan(conn: psycopg.Connection[Any], limit: int) -> str:
    """How the store's claim statement is planned here (EXPLAIN, not run): a
    scan of the whole jobs table, or lookups through an index."""
    try:
        from instar.store.postgres.store import Q

        sql = Q["claim"]
        params = {"worker": "bench-plan", "token": "t", "now": time.time(), "limit": limit}
        params |= {"queues": None, "names": None}
        plan = "\n".join(str(row[0]) for row in conn.execute(f"EXPLAIN {sql}".encode(), params))
    except (ImportError, KeyError, psycopg.Error):
        return "claim plan unknown"
    if "Seq Scan on jobs" in plan:
        return "claim plan: a seq scan of jobs"
    words = plan.replace("(", " ").replace(")", " ").split()
    indexes = sorted({w for w in words if re.fullmatch(r"jobs_[a-z_]+", w)})
    return f"claim plan: {', '.join(indexes) or '?'}"


def _reader(conn: psycopg.Connection[Any]) -> Query:
    def query(sql: str) -> Sequence[Sequence[Any]]:
        return conn.execute(sql.encode()).fetchall()

    return query


class PostgresBench:
    """The PostgreSQL measurements, and the schemas they create."""

    def __init__(self, url: str, sizes: Sizes, tmp: Path) -> None:
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "schema"]
        self.base = urlunsplit((*parts[:3], urlencode(query), ""))
        self.sizes = sizes
        self.tmp = tmp
        self.prefix = f"bench_{os.getpid()}_"
        self.created: list[str] = []  # not dropped yet
        self.server: dict[str, str] = {}
        self.load_at_start = os.getloadavg()[0]
        self.where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"
        # The server's CPU is read from /proc: only when it runs on this machine.
        self.local = (parts.hostname or "localhost") in ("localhost", "127.0.0.1", "::1")
        self.cpu_runs: list[Processing] = []

    # -- schemas -------------------------------------------------------------------

    def url(self, schema: str) -> str:
        parts = urlsplit(self.base)
        query = [*parse_qsl(parts.query), ("schema", schema)]
        return urlunsplit((*parts[:3], urlencode(query), ""))

    def connect(self, schema: str | None = None) -> psycopg.Connection[Any]:
        if schema is None:
            return psycopg.connect(self.base, autocommit=True, connect_timeout=10)
        return psycopg.connect(
            self.base, autocommit=True, connect_timeout=10, options=f"-c search_path={schema}"
        )

    @contextmanager
    def schema(self, what: str) -> Iterator[tuple[str, str, psycopg.Connection[Any]]]:
        """A fresh schema: its name, its Instar URL and a plain autocommit
        connection into it; the schema is dropped afterwards, whatever happens."""
        name = self.prefix + what
        self.created.append(name)
        try:
            with self.connect() as admin:
                admin.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE".encode())
                admin.execute(f"CREATE SCHEMA {name}".encode())
            with self.connect(name) as conn:
                yield name, self.url(name), conn
        finally:
            self._drop(name)

    def _drop(self, name: str) -> None:
        with self.connect() as admin:
            admin.execute(b"SET lock_timeout = '10s'")
            admin.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE".encode())
        self.created.remove(name)

    def drop_schemas(self) -> None:
        """Drop every schema still left, deaf to a second Ctrl-C meanwhile."""
        if not self.created:
            return
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for name in list(self.created):
                try:
                    self._drop(name)
                except psycopg.Error as error:
                    progress.print(
                        f"could not drop schema {name} ({error}); drop it with "
                        f"DROP SCHEMA {name} CASCADE"
                    )
        finally:
            signal.signal(signal.SIGINT, previous)

    # -- measurements --------------------------------------------------------------

    def raw_limit(self) -> tuple[float, int]:
        """One psycopg connection, autocommit, one single-row INSERT per commit: rows/s."""
        sizes = self.sizes
        with self.schema("raw") as (_, _, conn):
            conn.execute(
                b"CREATE TABLE t (id bigserial PRIMARY KEY, name text, args text, "
                b"at double precision)"
            )
            insert = b"INSERT INTO t (name, args, at) VALUES ('noop', '{}', %s)"
            rows = 0
            start = time.perf_counter()
            while rows < sizes.raw_rows and time.perf_counter() - start < sizes.raw_seconds:
                conn.execute(insert, (time.time(),))
                rows += 1
            elapsed = time.perf_counter() - start
        return rows / elapsed, rows

    def instar_processing(
        self, handler: str, label: str, processes: int, *, forked: bool = False
    ) -> Processing:
        """Queue ``process_jobs`` jobs, then time burst worker processes draining
        them: as many commands, or one forking them (``forked``)."""
        sizes = self.sizes
        with self.schema(label.replace("-", "_")) as (_, url, conn):
            bulk_enqueue(url, sizes.process_jobs, sizes.bulk_chunk, handler)
            result = instar_drain(
                url,
                _reader(conn),
                self.tmp,
                label,
                sizes,
                processes,
                forked=forked,
                server_cpu=self.local,
            )
        self.cpu_runs.append(result)
        return result

    def pgq_processing(self, r: int) -> Processing:
        sizes = self.sizes
        label = f"pgqueuer-{r}"
        with self.schema(f"pgqueuer_{r}") as (schema, _, _):
            peers.pgq_install(self.base, schema)
            peers.pgq_bulk_enqueue(self.base, schema, sizes.process_jobs, sizes.bulk_chunk)
            result = peers.pgq_drain(self.base, schema, self.tmp, label, sizes)
        self.cpu_runs.append(result)
        return result

    def pruned(self) -> Pruned:
        """Old finished jobs pruned; claiming and enqueueing before and after."""
        with (
            self.schema("pruning") as (_, url, conn),
            self.schema("pruning_control") as (_, control, _),
        ):

            def fill() -> None:
                params = {"now": time.time() - OLD, "rows": self.sizes.pruned}
                conn.execute(INSERT_FINISHED.encode(), params)
                conn.execute(OLD_EVENTS.encode())
                conn.execute(ROLLED_UP.encode())

            def settle() -> None:
                # What autovacuum does after a mass delete, at once; then a
                # checkpoint, so that its writes do not slow the commits timed next.
                conn.execute(b"VACUUM ANALYZE jobs")
                conn.execute(b"VACUUM ANALYZE events")
                conn.execute(b"CHECKPOINT")

            return pruning(url, control, self.sizes, fill, settle)

    def dashboard(self, rows: list[Row]) -> None:
        """The dashboard's pages over ``sizes.pruned`` finished jobs, and the
        transactions an open page's event stream adds while nothing moves."""
        with self.schema("dashboard") as (_, url, conn):

            def fill() -> None:
                params = {"now": time.time(), "rows": self.sizes.pruned}
                conn.execute(INSERT_FINISHED.encode(), params)
                conn.execute(b"VACUUM ANALYZE jobs")

            def transactions() -> int:
                found = conn.execute(
                    b"SELECT xact_commit + xact_rollback FROM pg_stat_database "
                    b"WHERE datname = current_database()"
                ).fetchone()
                return int(found[0]) if found else 0

            dashboard.run(rows, self.sizes, url, "PostgreSQL", fill, transactions)

    def finished(self, rows: int) -> Finished:
        """A schema with no finished jobs and one with ``rows`` of them, side by
        side: claims taken in turns, then burst workers taking turns between them
        (``rounds`` in each, the table without first; later rounds there find the
        few thousand jobs of the earlier ones)."""
        sizes = self.sizes
        with (
            self.schema("finished_0") as (_, empty_url, empty_conn),
            self.schema(f"finished_{rows}") as (_, full_url, full_conn),
        ):
            urls, conns = [empty_url, full_url], [empty_conn, full_conn]
            for url in urls:
                with make_app(url) as app:
                    app.engine  # noqa: B018  (creates the tables)
            start = time.perf_counter()
            full_conn.execute(INSERT_FINISHED.encode(), {"now": time.time(), "rows": rows})
            inserted = time.perf_counter() - start
            plans = []
            for url, conn in zip(urls, conns, strict=True):
                bulk_enqueue(url, (2 + sizes.claim_batches) * sizes.claim_limit, sizes.bulk_chunk)
                # autovacuum may be off (it is on the machine this was written on):
                # give the planner statistics either way, the same for both tables.
                conn.execute(b"ANALYZE jobs")
                plans.append(claim_plan(conn, sizes.claim_limit))
            claims = claim_batches(urls, sizes)
            drains: tuple[list[Processing], list[Processing]] = ([], [])
            for r in range(1, sizes.rounds + 1):
                for url, conn, runs, what in zip(
                    urls, conns, drains, ("0", str(rows)), strict=True
                ):
                    if r == 1:
                        conn.execute(FINISH_CLAIMED.encode())
                    bulk_enqueue(url, sizes.process_jobs, sizes.bulk_chunk, "noop_sync")
                    drained = instar_drain(
                        url,
                        _reader(conn),
                        self.tmp,
                        f"finished-{what}-{r}",
                        sizes,
                        server_cpu=self.local,
                    )
                    self.cpu_runs.append(drained)
                    runs.append(drained)
        return Finished(rows, inserted, claims, (plans[0], plans[1]), drains)

    # -- the table -----------------------------------------------------------------

    def bulk(self, r: int) -> float:
        with self.schema(f"bulk_{r}") as (_, url, _):
            return bulk_enqueue(url, self.sizes.bulk_total, self.sizes.bulk_chunk)

    def pgq_bulk(self, r: int) -> float:
        sizes = self.sizes
        with self.schema(f"pgq_bulk_{r}") as (schema, _, _):
            peers.pgq_install(self.base, schema)
            return peers.pgq_bulk_enqueue(self.base, schema, sizes.bulk_total, sizes.bulk_chunk)

    def pickup(self) -> Latency:
        with self.schema("pickup") as (_, url, _):
            return instar_pickup(url, self.tmp, self.sizes, "pickup")

    def pgq_pickup(self) -> Latency:
        with self.schema("pgq_pickup") as (schema, _, _):
            peers.pgq_install(self.base, schema)
            return peers.pgq_pickup(self.base, schema, self.tmp, self.sizes, "pgqueuer-pickup")

    def run(self, rows: list[Row]) -> None:
        """Take every measurement in turn, appending rows as they come; one that
        fails gets a row saying so, and the others still run."""
        sizes = self.sizes
        self.load_at_start = os.getloadavg()[0]
        with self.connect() as conn:
            for setting in (
                "server_version",
                "synchronous_commit",
                "fsync",
                "wal_sync_method",
                "autovacuum",
                "shared_buffers",
            ):
                found = conn.execute(f"SHOW {setting}".encode()).fetchone()
                self.server[setting] = "?" if found is None else str(found[0]).split()[0]

        progress.print("PostgreSQL: raw psycopg commits and enqueue one by one, in turns ...")

        def in_turns() -> EnqueueTurns:
            with self.schema("enqueue") as (_, url, _):
                return enqueue_in_turns(
                    sizes.enqueue_rounds,
                    lambda r: self.raw_limit(),
                    partial(enqueue_one_by_one, url, sizes.enqueue_jobs),
                )

        raw = enqueue_against_raw(
            rows, in_turns, "psycopg autocommit INSERT", "one connection", 0.9
        )
        commit_ms = 1000 / raw if raw else None

        progress.print("PostgreSQL: bare claim/complete/event loop ...")

        def bare_loop() -> Bare:
            with self.schema("bare") as (_, _, conn):
                return bare_postgres(conn, sizes.process_jobs, sizes.bare_batch)

        bare = attempt(rows, "bare loop", bare_loop)
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

        pgq_missing = peers.missing("pgqueuer")
        bulks: list[float] = []
        pgq_bulks: list[float] = []
        for r in range(1, sizes.rounds + 1):
            progress.print(f"PostgreSQL: bulk enqueue, round {r} of {sizes.rounds} ...")
            found_bulk = attempt(rows, f"bulk enqueue, round {r}", partial(self.bulk, r))
            bulks += [found_bulk] if found_bulk is not None else []
            if pgq_missing is None:
                found_bulk = attempt(
                    rows, f"pgqueuer bulk enqueue, round {r}", partial(self.pgq_bulk, r)
                )
                pgq_bulks += [found_bulk] if found_bulk is not None else []
        bulk = statistics.median(bulks) if bulks else None
        pgq_bulk = statistics.median(pgq_bulks) if pgq_bulks else None

        defs: list[Processing] = []
        asyncs: list[Processing] = []
        several: list[Processing] = []
        commands: list[Processing] = []
        pgqs: list[Processing] = []
        w = sizes.workers
        for r in range(1, sizes.rounds + 1):
            # What to run, and where its result goes; each round starts one
            # further along, so that no figure always follows the same one.
            turns: list[tuple[str, str, Callable[[], Processing], list[Processing]]] = [
                (
                    "Instar def, 1 process",
                    "processing, def no-op",
                    partial(self.instar_processing, "noop_sync", f"def-1p-{r}", 1),
                    defs,
                ),
                (
                    "Instar async, 1 process",
                    "processing, async no-op",
                    partial(self.instar_processing, "noop", f"async-1p-{r}", 1),
                    asyncs,
                ),
                (
                    f"Instar def, {w} processes (--processes {w})",
                    f"processing, def no-op, {w} processes",
                    partial(self.instar_processing, "noop_sync", f"def-{w}p-{r}", w, forked=True),
                    several,
                ),
                (
                    f"Instar def, {w} commands",
                    f"processing, def no-op, {w} commands",
                    partial(self.instar_processing, "noop_sync", f"def-{w}c-{r}", w),
                    commands,
                ),
            ]
            if pgq_missing is None:
                turns.append(
                    ("pgqueuer", "pgqueuer processing", partial(self.pgq_processing, r), pgqs)
                )
            shift = (r - 1) % len(turns)
            for what, label, run, results in turns[shift:] + turns[:shift]:
                progress.print(f"PostgreSQL: processing, round {r} of {sizes.rounds}: {what} ...")
                found = attempt(rows, f"{label}, round {r}", run)
                if found is not None:
                    results.append(found)
        single = median_run(defs) if defs else None
        pgq = median_run(pgqs) if pgqs else None

        progress.print("PostgreSQL: pickup latency of an idle worker: Instar ...")
        latency = attempt(rows, "pickup latency", self.pickup)
        pgq_latency: Latency | None = None
        if pgq_missing is None:
            progress.print("PostgreSQL: pickup latency of an idle worker: pgqueuer ...")
            pgq_latency = attempt(rows, "pgqueuer pickup latency", self.pgq_pickup)

        # -- the peer's rows
        if pgq_missing:
            rows.append(Row("pgqueuer", "-", "-", "-", None, pgq_missing))
        if pgq_bulk is not None:
            rows.append(
                judged(
                    "pgqueuer: bulk enqueue (Queries.enqueue, lists)",
                    rate(pgq_bulk),
                    pgq_bulk,
                    raw,
                    "raw",
                    "-",
                    None,
                    f"median of {len(pgq_bulks)}; {sizes.bulk_total:,} jobs, "
                    f"{sizes.bulk_chunk:,} per call",
                )
            )
        if pgq is not None:
            rows.append(
                judged(
                    "pgqueuer: processing, no-op, 1 process: wall",
                    rate(pgq.wall_rate),
                    pgq.wall_rate,
                    bare_rate,
                    "bare",
                    "-",
                    None,
                    f"{runs_note(pgqs)}; {pgq.detail()}; pgq run --mode drain, defaults "
                    "(batch size 10, no concurrency limit), async entrypoint",
                )
            )
        if pgq_latency is not None:
            rows.append(
                Row(
                    "pgqueuer: pickup latency p50",
                    f"{pgq_latency.p50_ms:.1f} ms",
                    f"{pgq_latency.p50_ms / commit_ms:.1f} commits" if commit_ms else "-",
                    "-",
                    None,
                    f"p99 {pgq_latency.p99_ms:.1f} ms; " + pgq_latency.detail(sizes.pickup_gap),
                )
            )

        # -- Instar's rows
        if bulk is not None:
            rows.append(
                judged(
                    "bulk enqueue (enqueue_many)",
                    rate(bulk),
                    bulk,
                    pgq_bulk,
                    "pgqueuer",
                    ">= 2.00x pgqueuer",
                    2.0,
                    f"median of {len(bulks)}; {sizes.bulk_total:,} jobs, "
                    f"{sizes.bulk_chunk:,} per call" + (f"; {bulk / raw:.1f}x raw" if raw else ""),
                )
            )
        if single is not None:
            rows.append(
                judged(
                    "processing, def no-op, 1 process: wall",
                    rate(single.wall_rate),
                    single.wall_rate,
                    pgq.wall_rate if pgq else None,
                    "pgqueuer",
                    ">= 2.00x pgqueuer",
                    2.0,
                    f"{runs_note(defs)}; {single.detail()}; instar worker --burst, "
                    "default concurrency",
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
                    single.cpu.describe("worker"),
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
        if several:
            many = median_run(several)
            rows.append(
                judged(
                    f"processing, def no-op, {w} processes (--processes {w}): wall",
                    rate(many.wall_rate),
                    many.wall_rate,
                    single.wall_rate if single else None,
                    "1 process",
                    ">= 1.00x 1 process",
                    1.0,
                    f"{runs_note(several)}; {many.detail()}; {many.cpu.describe('workers')}",
                )
            )
        if commands:
            apart = median_run(commands)
            rows.append(
                judged(
                    f"the same, {w} commands (each imports and connects on its own)",
                    rate(apart.wall_rate),
                    apart.wall_rate,
                    single.wall_rate if single else None,
                    "1 process",
                    "-",
                    None,
                    f"{runs_note(commands)}; {apart.detail()}; {apart.cpu.describe('workers')}",
                )
            )
        if latency is not None:
            p50, p99 = latency.p50_ms, latency.p99_ms
            rows.append(
                judged(
                    "pickup latency p50",
                    f"{p50:.1f} ms",
                    p50,
                    pgq_latency.p50_ms if pgq_latency else None,
                    "pgqueuer",
                    "<= 1.00x pgqueuer",
                    1.0,
                    (f"{p50 / commit_ms:.1f} commits; " if commit_ms else "")
                    + latency.detail(sizes.pickup_gap),
                    at_most=True,
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

        n = sizes.finished_postgres
        progress.print(f"PostgreSQL: claiming and processing, 0 and {n:,} finished jobs ...")
        beside = attempt(rows, f"claiming beside {n:,} finished jobs", partial(self.finished, n))
        if beside is not None:
            rows += finished_rows(beside, commit_ms)

        progress.print(f"PostgreSQL: pruning {sizes.pruned:,} finished jobs ...")
        pruned = attempt(rows, "pruning", self.pruned)
        if pruned is not None:
            rows += pruning_rows(pruned)

    def title(self) -> str:
        version = self.server.get("server_version", "?")
        sync = self.server.get("synchronous_commit", "?")
        quick = " - QUICK RUN: smaller sizes, see the caption" if self.sizes.quick else ""
        return f"Instar on PostgreSQL {version} (synchronous_commit={sync}){quick}"

    def caption(self) -> str:
        sizes = self.sizes
        quick = (
            f"Quick run: {sizes.process_jobs:,} jobs per processing run, "
            f"{sizes.finished_postgres:,} finished rows (the full run: 10,000,000). "
            if sizes.quick
            else ""
        )
        return (
            f"{quick}Each processing figure: jobs queued first, then the worker process(es) "
            f"timed from start to the last completion; Instar and pgqueuer runs interleaved, "
            f"each round starting one further along ({sizes.rounds} round(s)), medians shown. "
            f"Server {self.where}, "
            f"fsync={self.server.get('fsync', '?')}, "
            f"wal_sync_method={self.server.get('wal_sync_method', '?')}, "
            f"autovacuum={self.server.get('autovacuum', '?')}, "
            f"shared_buffers={self.server.get('shared_buffers', '?')}; "
            f"Python {platform.python_version()}, psycopg {psycopg.__version__}, "
            f"asyncpg {peers.version('asyncpg') or '-'}, "
            f"pgqueuer {peers.version('pgqueuer') or 'not installed'}, "
            f"Instar {peers.version('instar')} ({code_note()}); "
            f"{os.cpu_count()} CPUs shared with the server ({load_note(self.load_at_start)}); "
            f"one schema per measurement ({self.prefix}*), dropped afterwards."
        )
