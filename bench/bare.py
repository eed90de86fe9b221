"""The bare loop: what one process of plain Python gets from the same driver
(``sqlite3``, ``psycopg``) for the work a job queue does per job, with nothing
else around it.

Its tables have the shape of Instar's where it matters (a jobs table with a
partial index on the ready jobs, an events table with an index on job_id); no
library code runs. Each turn is two transactions: claim a batch of ready jobs
(move them to running and write one event each), then complete the batch (move
them to completed and write one event each). One process, one connection, no
handlers: the jobs/s it reaches is the machine's own limit for this pattern.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.harness import BenchError


@dataclass(frozen=True)
class Bare:
    jobs: int
    seconds: float
    batch: int

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    def detail(self) -> str:
        turns = -(-self.jobs // self.batch)
        return (
            f"{self.jobs:,} jobs in {self.seconds:.2f} s; one process, claims of {self.batch}, "
            f"2 commits per claim ({turns * 2:,} in all), one event per move"
        )


# -- PostgreSQL ----------------------------------------------------------------------

PG_TABLES = [
    """CREATE TABLE jobs (
        id bigserial PRIMARY KEY, name text NOT NULL, queue text NOT NULL,
        state text NOT NULL, priority integer NOT NULL DEFAULT 0,
        attempt integer NOT NULL DEFAULT 0, args text NOT NULL, result text,
        worker text, lease_expires_at double precision,
        created_at double precision NOT NULL, updated_at double precision NOT NULL)""",
    "CREATE INDEX jobs_ready ON jobs (priority DESC, id) WHERE state = 'ready'",
    """CREATE TABLE events (
        id bigserial PRIMARY KEY, job_id bigint NOT NULL, at double precision NOT NULL,
        from_state text, to_state text NOT NULL, trigger text NOT NULL,
        attempt integer NOT NULL, worker text)""",
    "CREATE INDEX events_job ON events (job_id, id)",
]

PG_FILL = """
INSERT INTO jobs (name, queue, state, args, created_at, updated_at)
SELECT 'noop', 'default', 'ready', '{}', %(now)s, %(now)s FROM generate_series(1, %(jobs)s)
"""

PG_CLAIM = """
WITH claimed AS (
    UPDATE jobs SET state = 'running', attempt = attempt + 1, worker = %(worker)s,
                    lease_expires_at = %(now)s + 30, updated_at = %(now)s
    WHERE id IN (SELECT id FROM jobs WHERE state = 'ready'
                 ORDER BY priority DESC, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    RETURNING id, attempt
), logged AS (
    INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt, worker)
    SELECT id, %(now)s, 'ready', 'running', 'claimed', attempt, %(worker)s FROM claimed
)
SELECT id FROM claimed
"""

PG_COMPLETE = """
WITH done AS (
    UPDATE jobs SET state = 'completed', result = 'null', lease_expires_at = NULL,
                    updated_at = %(now)s
    WHERE id = ANY(%(ids)s) AND state = 'running' AND worker = %(worker)s
    RETURNING id, attempt
)
INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt, worker)
SELECT id, %(now)s, 'running', 'completed', 'completed', attempt, %(worker)s FROM done
"""


def bare_postgres(conn: psycopg.Connection[Any], jobs: int, batch: int) -> Bare:
    """The loop on an autocommit connection into an empty schema of its own:
    each statement below is one round trip and one commit."""
    for statement in PG_TABLES:
        conn.execute(statement.encode())
    conn.execute(PG_FILL.encode(), {"now": time.time(), "jobs": jobs})
    worker = "bare"
    done = 0
    start = time.perf_counter()
    while True:
        params: dict[str, Any] = {"worker": worker, "now": time.time(), "limit": batch}
        ids = [row[0] for row in conn.execute(PG_CLAIM.encode(), params).fetchall()]
        if not ids:
            break
        params = {"worker": worker, "now": time.time(), "ids": ids}
        conn.execute(PG_COMPLETE.encode(), params)
        done += len(ids)
    elapsed = time.perf_counter() - start
    if done != jobs:
        raise BenchError(f"bare loop: {done} of {jobs} jobs completed")
    return Bare(jobs, elapsed, batch)


# -- SQLite ------------------------------------------------------------------------

SQLITE_TABLES = [
    """CREATE TABLE jobs (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL, queue TEXT NOT NULL,
        state TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 0,
        attempt INTEGER NOT NULL DEFAULT 0, args TEXT NOT NULL, result TEXT,
        worker TEXT, lease_expires_at REAL,
        created_at REAL NOT NULL, updated_at REAL NOT NULL)""",
    "CREATE INDEX jobs_ready ON jobs (priority DESC, id) WHERE state = 'ready'",
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL, at REAL NOT NULL,
        from_state TEXT, to_state TEXT NOT NULL, trigger TEXT NOT NULL,
        attempt INTEGER NOT NULL, worker TEXT)""",
    "CREATE INDEX events_job ON events (job_id, id)",
]

SQLITE_FILL = """
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :jobs)
INSERT INTO jobs (name, queue, state, args, created_at, updated_at)
SELECT 'noop', 'default', 'ready', '{}', :now, :now FROM g
"""

SQLITE_CLAIM = """
UPDATE jobs SET state = 'running', attempt = attempt + 1, worker = :worker,
                lease_expires_at = :now + 30, updated_at = :now
WHERE id IN (SELECT id FROM jobs WHERE state = 'ready' ORDER BY priority DESC, id LIMIT :limit)
RETURNING id, attempt
"""

SQLITE_COMPLETE = """
UPDATE jobs SET state = 'completed', result = 'null', lease_expires_at = NULL, updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'running' AND worker = :worker
RETURNING id, attempt
"""

SQLITE_EVENT = """
INSERT INTO events (job_id, at, from_state, to_state, trigger, attempt, worker)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""


def bare_sqlite(path: Path, jobs: int, batch: int) -> Bare:
    """The loop on a new file with the pragmas Instar uses (WAL, synchronous=FULL)."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        for statement in SQLITE_TABLES:
            conn.execute(statement)
        conn.execute(SQLITE_FILL, {"now": time.time(), "jobs": jobs})
        worker = "bare"
        done = 0
        start = time.perf_counter()
        while True:
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            claimed = conn.execute(
                SQLITE_CLAIM, {"worker": worker, "now": now, "limit": batch}
            ).fetchall()
            conn.executemany(
                SQLITE_EVENT,
                [(i, now, "ready", "running", "claimed", a, worker) for i, a in claimed],
            )
            conn.execute("COMMIT")
            if not claimed:
                break
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            ids = json.dumps([i for i, _ in claimed])
            completed = conn.execute(
                SQLITE_COMPLETE, {"worker": worker, "now": now, "ids": ids}
            ).fetchall()
            conn.executemany(
                SQLITE_EVENT,
                [(i, now, "running", "completed", "completed", a, worker) for i, a in completed],
            )
            conn.execute("COMMIT")
            done += len(completed)
        elapsed = time.perf_counter() - start
    if done != jobs:
        raise BenchError(f"bare loop: {done} of {jobs} jobs completed")
    return Bare(jobs, elapsed, batch)
