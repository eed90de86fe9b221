"""Instar on PostgreSQL, each figure beside what one plain psycopg connection
manages on the same server in the same run (autocommit single-row INSERTs).

Every measurement runs in a fresh schema (``?schema=bench_<pid>_<what>``),
dropped with ``DROP SCHEMA ... CASCADE`` as soon as it is done; whatever is
left when the run fails or is interrupted is dropped by ``drop_schemas``.
"""

from __future__ import annotations

import os
import platform
import signal
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg

from bench.harness import (
    BenchError,
    Processing,
    Query,
    Row,
    Sizes,
    bulk_enqueue,
    drain,
    enqueue_one_by_one,
    latency_detail,
    load_note,
    percentile,
    pickup_latency,
    processing_detail,
    progress,
    rate,
)
from bench.noop_app import make_app
from instar.store.contract import ClaimRequest

# Old finished jobs, as the engine leaves them, in one statement.
INSERT_FINISHED = """
INSERT INTO jobs (name, queue, state, priority, attempt, max_attempts, args, result,
                  created_at, updated_at, lease_seconds, version)
SELECT 'noop', 'default', 'completed', 0, 1, 3, '{}', 'null',
       %(now)s - 86400 + g * 0.01, %(now)s - 86400 + g * 0.01 + 0.05, 30, 2
FROM generate_series(1, %(rows)s) AS g
"""

# The claim batches leave their jobs running under a worker that never was;
# finish them as a worker would have, so they join the finished rows.
FINISH_CLAIMED = """
UPDATE jobs SET state = 'completed', result = 'null', lease_token = NULL,
                lease_expires_at = NULL, version = version + 1
WHERE state = 'running'
"""


@dataclass(frozen=True)
class Claims:
    """``commit_batch`` claiming batches of ready jobs, one transaction each."""

    batch_ms: list[float]
    limit: int

    @property
    def median_ms(self) -> float:
        return statistics.median(self.batch_ms)

    @property
    def claims_per_second(self) -> float:
        return len(self.batch_ms) * self.limit / (sum(self.batch_ms) / 1000)

    def detail(self) -> str:
        return (
            f"median of {len(self.batch_ms)} batches of {self.limit}; "
            f"p90 {percentile(self.batch_ms, 90):.2f} ms, max {max(self.batch_ms):.2f} ms; "
            f"{self.claims_per_second:,.0f} claims/s"
        )


@dataclass(frozen=True)
class FinishedRows:
    """Claiming, and processing, on a schema holding ``rows`` completed jobs."""

    rows: int
    insert_seconds: float
    claims: Claims
    plan: str  # how PostgreSQL runs the claim statement on that table
    drained: Processing | None  # a burst worker's run there, when rows > 0


def claim_plan(conn: psycopg.Connection[Any], limit: int) -> str:
    """How the store's claim statement is planned here (EXPLAIN, not run): a
    scan of the whole jobs table, or one primary-key lookup per claimed job."""
    try:
        from instar.store.postgres.store import Q

        sql = Q["claim"]
    except (ImportError, KeyError):
        return "plan unknown"
    params = {
        "worker": "bench-plan",
        "now": time.time(),
        "limit": limit,
        "queues": None,
        "names": None,
    }
    plan = "\n".join(str(row[0]) for row in conn.execute(f"EXPLAIN {sql}".encode(), params))
    joins = [j for j in ("Hash Semi Join", "Hash Join", "Nested Loop") if j in plan]
    if "Seq Scan on jobs" in plan:
        scan = "a seq scan of jobs"
    elif "jobs_pkey" in plan:
        scan = "jobs_pkey lookups"
    else:
        scan = "?"
    return f"claim plan: {joins[0] if joins else '?'} over {scan}"


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
        where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"
        self.where = where

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
    def schema(self, what: str) -> Iterator[tuple[str, psycopg.Connection[Any]]]:
        """A fresh schema's Instar URL and a plain autocommit connection into it;
        the schema is dropped afterwards, whatever happens."""
        name = self.prefix + what
        self.created.append(name)
        try:
            with self.connect() as admin:
                admin.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE".encode())
                admin.execute(f"CREATE SCHEMA {name}".encode())
            with self.connect(name) as conn:
                yield self.url(name), conn
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
        with self.schema("raw") as (_, conn):
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

    def processing(self, what: str, processes: int) -> Processing:
        """Queue ``process_jobs`` no-op jobs, then time burst worker processes draining them."""
        sizes = self.sizes
        with self.schema(what) as (url, conn):
            bulk_enqueue(url, sizes.process_jobs, sizes.bulk_chunk)
            return drain(url, _reader(conn), self.tmp, what, sizes, processes)

    def with_finished(self, what: str, finished: int) -> FinishedRows:
        """Claiming on a schema holding ``finished`` completed jobs (and, if any,
        one burst worker draining ``process_jobs`` jobs there afterwards)."""
        sizes = self.sizes
        warmup = 2  # first batches: connection, prepared statements, caches
        with self.schema(what) as (url, conn), make_app(url) as app:
            app.engine  # noqa: B018  (opens and migrates)
            start = time.perf_counter()
            if finished:
                conn.execute(INSERT_FINISHED.encode(), {"now": time.time(), "rows": finished})
            inserted = time.perf_counter() - start
            ready = (warmup + sizes.claim_batches) * sizes.claim_limit
            app.enqueue_many(app.definition("noop"), [{}] * ready)
            conn.execute(b"ANALYZE jobs")
            plan = claim_plan(conn, sizes.claim_limit)
            timings: list[float] = []
            for i in range(warmup + sizes.claim_batches):
                request = ClaimRequest("bench-claimer", sizes.claim_limit, None)
                start = time.perf_counter()
                batch = app.engine.exchange([], [], request)
                elapsed = time.perf_counter() - start
                if len(batch.claimed) != sizes.claim_limit:
                    raise BenchError(f"{what}: a claim batch took {len(batch.claimed)} jobs")
                if i >= warmup:
                    timings.append(elapsed * 1000)
            drained = None
            if finished:
                conn.execute(FINISH_CLAIMED.encode())
                bulk_enqueue(url, sizes.process_jobs, sizes.bulk_chunk)
                drained = drain(url, _reader(conn), self.tmp, what, sizes)
        return FinishedRows(finished, inserted, Claims(timings, sizes.claim_limit), plan, drained)

    # -- the table -----------------------------------------------------------------

    def run(self, rows: list[Row]) -> None:
        """Take every measurement in turn, appending to ``rows`` (kept if a later one fails)."""
        sizes = self.sizes
        self.load_at_start = os.getloadavg()[0]
        with self.connect() as conn:
            for setting in ("server_version", "synchronous_commit", "fsync", "wal_sync_method"):
                found = conn.execute(f"SHOW {setting}".encode()).fetchone()
                self.server[setting] = "?" if found is None else str(found[0]).split()[0]

        progress.print("PostgreSQL: raw psycopg commits ...")
        raw, raw_rows = self.raw_limit()
        commit_ms = 1000 / raw
        rows.append(
            Row(
                "raw limit: psycopg autocommit INSERT",
                rate(raw),
                "1.00x",
                "-",
                None,
                f"{raw_rows:,} rows, one connection; {commit_ms:.2f} ms per commit",
            )
        )

        progress.print("PostgreSQL: enqueue one by one ...")
        with self.schema("enqueue") as (url, _):
            one = enqueue_one_by_one(url, sizes.enqueue_jobs)
        rows.append(
            Row(
                "enqueue one by one",
                rate(one),
                f"{one / raw:.2f}x",
                ">= 0.90x raw",
                one / raw >= 0.9,
                f"{sizes.enqueue_jobs:,} jobs",
            )
        )

        progress.print("PostgreSQL: bulk enqueue ...")
        with self.schema("bulk") as (url, _):
            bulk = bulk_enqueue(url, sizes.bulk_total, sizes.bulk_chunk)
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

        progress.print("PostgreSQL: processing, 1 worker process ...")
        single = self.processing("process_1", 1)
        rows += processing_rows(single, "1 process", raw, sizes, None)
        progress.print(f"PostgreSQL: processing, {sizes.workers} worker processes ...")
        several = self.processing(f"process_{sizes.workers}", sizes.workers)
        rows += processing_rows(several, f"{sizes.workers} processes", raw, sizes, single)

        progress.print("PostgreSQL: pickup latency of an idle worker ...")
        with self.schema("pickup") as (url, conn):
            latencies, code = pickup_latency(url, _reader(conn), self.tmp, sizes)
        p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
        rows.append(
            Row(
                "pickup latency p50",
                f"{p50:.1f} ms",
                f"{p50 / commit_ms:.1f} commits",
                "<= 4 ms",
                p50 <= 4,
                latency_detail(latencies, sizes, code),
            )
        )
        rows.append(
            Row(
                "pickup latency p99",
                f"{p99:.1f} ms",
                f"{p99 / commit_ms:.1f} commits",
                "<= 10 ms",
                p99 <= 10,
                "",
            )
        )

        progress.print("PostgreSQL: claiming, no finished jobs ...")
        empty = self.with_finished("claim_empty", 0)
        rows.append(
            Row(
                f"claim {sizes.claim_limit} (commit_batch), 0 finished jobs",
                f"{empty.claims.median_ms:.2f} ms",
                f"{empty.claims.median_ms / commit_ms:.1f} commits",
                "-",
                None,
                f"{empty.claims.detail()}; ANALYZEd; {empty.plan}",
            )
        )
        progress.print(f"PostgreSQL: claiming, {sizes.finished_rows:,} finished jobs ...")
        full = self.with_finished("claim_full", sizes.finished_rows)
        ratio = full.claims.median_ms / empty.claims.median_ms
        rows.append(
            Row(
                f"claim {sizes.claim_limit} (commit_batch), {full.rows:,} finished",
                f"{full.claims.median_ms:.2f} ms",
                f"{full.claims.median_ms / commit_ms:.1f} commits",
                "<= 1.25x 0 finished",
                ratio <= 1.25,
                f"{ratio:.2f}x the empty table; {full.claims.detail()}; ANALYZEd; {full.plan}; "
                f"the {full.rows:,} completed rows took {full.insert_seconds:.1f} s "
                "(one INSERT ... SELECT)",
            )
        )
        if full.drained is not None:
            steady = full.drained.steady_rate
            rows.append(
                Row(
                    f"processing, 1 process, {full.rows:,} finished: steady",
                    rate(steady),
                    f"{steady / raw:.2f}x",
                    ">= 0.80x 0 finished",
                    steady >= 0.8 * single.steady_rate,
                    f"{steady / single.steady_rate:.2f}x the empty table's steady rate; "
                    f"wall {rate(full.drained.wall_rate)}; "
                    + processing_detail(full.drained, sizes),
                )
            )

    def title(self) -> str:
        version = self.server.get("server_version", "?")
        sync = self.server.get("synchronous_commit", "?")
        return f"Instar on PostgreSQL {version} (synchronous_commit={sync})"

    def caption(self) -> str:
        return (
            f"x raw: the figure over the raw commit rate; latency in raw commit times. "
            f"Server {self.where}, fsync={self.server.get('fsync', '?')}, "
            f"wal_sync_method={self.server.get('wal_sync_method', '?')}; "
            f"Python {platform.python_version()}, psycopg {psycopg.__version__}, "
            f"{os.cpu_count()} CPUs shared with the server ({load_note(self.load_at_start)}); "
            f"one schema per measurement ({self.prefix}*), dropped afterwards."
        )


def processing_rows(
    result: Processing, label: str, raw: float, sizes: Sizes, baseline: Processing | None
) -> list[Row]:
    """Wall and steady rows; against a fixed target, or faster than ``baseline``."""
    rows = []
    for kind, value in (("wall", result.wall_rate), ("steady", result.steady_rate)):
        if baseline is None:
            target, met = ">= 6,000 /s", value >= 6_000
        else:
            base = baseline.wall_rate if kind == "wall" else baseline.steady_rate
            target, met = f"> 1 process ({base:,.0f})", value > base
        detail = (
            processing_detail(result, sizes)
            if kind == "wall"
            else "completions between the 10% and 90% completed events"
        )
        rows.append(
            Row(
                f"processing, async no-op, {label}: {kind}",
                rate(value),
                f"{value / raw:.2f}x",
                target,
                met,
                detail,
            )
        )
    return rows
