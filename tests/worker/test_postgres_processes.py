"""Four worker processes sharing one PostgreSQL schema, and one of them SIGKILLed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

import instar
from instar.lifecycle import State
from tests.conftest import POSTGRES
from tests.jobs_app import app as jobs_app

ROOT = Path(__file__).resolve().parents[2]
JOBS = 5000

# PostgreSQL only: the ``database`` fixture gives each test a schema of its own.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("database", ["postgresql"], indirect=True),
]


@contextmanager
def worker_process(
    database: str, log: Path, stderr: Path, *args: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``instar worker`` as a real subprocess, its stderr in a file (never a pipe
    nobody reads), stopped with SIGTERM (or killed) at the end."""
    env = {**os.environ, "INSTAR_TEST_LOG": str(log)}
    command = [sys.executable, "-m", "instar.cli.main", "worker", "--app", "tests.jobs_app:app"]
    with stderr.open("ab") as err:
        proc = subprocess.Popen(
            [*command, "--database", database, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until(
    predicate: Callable[[], bool],
    timeout: float = 30.0,
    what: str = "",
    state: Callable[[], object] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"not met within {timeout}s: {what or predicate} {state()}")


def started(proc: subprocess.Popen[bytes], stderr: Path) -> bool:
    """Whether the worker says it has started; a worker that exited instead fails the test."""
    if stderr.exists() and b" started (concurrency " in stderr.read_bytes():
        return True
    if proc.poll() is not None:
        raise AssertionError(f"worker exited with {proc.returncode}:\n{stderr.read_text()}")
    return False


def runs_of(log: Path) -> list[tuple[int, int]]:
    """(job number, pid) for each handler run, from the shared O_APPEND log."""
    if not log.exists():
        return []
    return [
        (int(n), int(pid)) for n, pid in (line.split() for line in log.read_text().splitlines())
    ]


def rows(database: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Test-only SQL against the test's own schema, past the engine."""
    schema = database.rsplit("schema=", 1)[1]
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        return conn.execute(sql, params).fetchall()


@pytest.fixture
def client(database: str) -> Iterator[instar.App]:
    with instar.App(database) as app:
        app.registry.update(jobs_app.registry)
        yield app


@contextmanager
def four_workers(
    database: str, tmp_path: Path, log: Path, *args: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Four worker processes, each started (and idle) before the block begins,
    so that every one of them is there to take a share."""
    with ExitStack() as stack:
        errs = [tmp_path / f"worker-{i}.err" for i in range(4)]
        procs = [
            stack.enter_context(worker_process(database, log, err, "--concurrency", "8", *args))
            for err in errs
        ]
        wait_until(
            lambda: all(started(proc, err) for proc, err in zip(procs, errs, strict=True)),
            what="four workers started",
        )
        yield procs


def test_four_worker_processes_run_each_of_5000_jobs_exactly_once(
    client: instar.App, database: str, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    with four_workers(database, tmp_path, log) as procs:
        client.enqueue_many("record", [{"n": n} for n in range(JOBS)])
        wait_until(
            lambda: client.counts().get(State.COMPLETED, 0) == JOBS, what="all jobs completed"
        )
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0]
    runs = runs_of(log)
    assert Counter(n for n, _ in runs) == Counter(range(JOBS)), "each job ran exactly once"
    shares = Counter(pid for _, pid in runs)
    assert set(shares) == {proc.pid for proc in procs}, f"all four took a share: {shares}"
    assert client.counts() == {State.COMPLETED: JOBS}
    # One claim and one completion per job, nothing else, in every timeline.
    moves = rows(
        database,
        "SELECT from_state, to_state, count(*) FROM events"
        " WHERE from_state IS DISTINCT FROM to_state GROUP BY 1, 2 ORDER BY 1 NULLS FIRST, 2",
    )
    assert moves == [
        (None, "ready", JOBS),
        ("ready", "running", JOBS),
        ("running", "completed", JOBS),
    ]


def test_a_sigkilled_worker_process_loses_no_jobs_and_only_its_jobs_in_flight_run_twice(
    client: instar.App, database: str, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    with four_workers(database, tmp_path, log, "--queue", "leased") as procs:
        victim = procs[0]
        jobs = client.enqueue_many(
            "record_leased", [{"n": n, "seconds": 0.002} for n in range(JOBS)]
        )
        number = {job.id: n for n, job in enumerate(jobs)}
        # Mid-run: the victim has done some of its share and the backlog is far from empty.
        wait_until(
            lambda: sum(pid == victim.pid for _, pid in runs_of(log)) >= 200,
            what="the victim ran 200 jobs",
            state=lambda: (client.counts(), Counter(pid for _, pid in runs_of(log)), victim.pid),
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at = len(runs_of(log))
        wait_until(
            lambda: client.counts().get(State.COMPLETED, 0) == JOBS, what="all jobs completed"
        )
    assert killed_at < JOBS * 0.8, f"the kill came too late to be mid-run ({killed_at} runs)"
    assert victim.returncode == -signal.SIGKILL
    assert [proc.returncode for proc in procs[1:]] == [0, 0, 0]
    assert client.counts() == {State.COMPLETED: JOBS}

    runs = runs_of(log)
    per_job = Counter(n for n, _ in runs)
    assert set(per_job) == set(range(JOBS)), "every job ran at least once"
    twice = {n for n, count in per_job.items() if count > 1}
    assert max(per_job.values()) == 2

    # The killed worker's id is host:pid:suffix; its claims and completions are in the events.
    victim_like = f"%:{victim.pid}:%"
    claimed_by_victim = {
        number[job_id]
        for (job_id,) in rows(
            database,
            "SELECT job_id FROM events WHERE trigger = 'claimed' AND worker LIKE %s",
            (victim_like,),
        )
    }
    finished_by_victim = {
        number[job_id]
        for (job_id,) in rows(
            database,
            "SELECT job_id FROM events WHERE to_state = 'completed' AND worker LIKE %s",
            (victim_like,),
        )
    }
    orphaned = {
        number[job_id]
        for (job_id,) in rows(database, "SELECT job_id FROM events WHERE to_state = 'orphaned'")
    }
    assert orphaned, "the kill should have left jobs in flight"
    assert orphaned == claimed_by_victim - finished_by_victim, (
        "exactly the jobs the killed worker held and never finished were orphaned"
    )
    assert twice, "jobs the victim had run but not yet reported should have run again"
    assert twice <= orphaned, f"jobs ran twice without being orphaned: {sorted(twice - orphaned)}"
    for n in orphaned:
        pids = [pid for m, pid in runs if m == n]
        others = [pid for pid in pids if pid != victim.pid]
        assert len(others) == 1, f"job {n}: rerun once by a surviving worker, got {pids}"
        assert pids[: len(pids) - 1] == [victim.pid] * (len(pids) - 1), (
            f"job {n}: only a run by the killed worker came before the rerun, got {pids}"
        )
    # Every orphaned job's own timeline: claimed by the victim, orphaned, requeued, completed.
    for n in sorted(orphaned)[:20]:
        path = [
            (e.from_state, e.to_state, e.trigger)
            for e in client.history(jobs[n].id)
            if e.from_state != e.to_state
        ]
        assert path == [
            (None, State.READY, "enqueued"),
            (State.READY, State.RUNNING, "claimed"),
            (State.RUNNING, State.ORPHANED, "lease-expired"),
            (State.ORPHANED, State.READY, "requeued"),
            (State.READY, State.RUNNING, "claimed"),
            (State.RUNNING, State.COMPLETED, "completed"),
        ], f"job {n}"


def _listening_backends(database: str) -> int:
    """Connections of this test's schema that LISTEN for wake-ups."""
    schema = database.rsplit("schema=", 1)[1]
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = %s",
            (f'LISTEN "instar_{schema}"',),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_an_app_that_only_enqueues_is_sent_no_wake_ups_and_a_worker_listens(
    client: instar.App, database: str, tmp_path: Path
) -> None:
    client.enqueue("record", {"n": 0})
    assert _listening_backends(database) == 0  # no notification goes to the producer
    log, err = tmp_path / "runs.log", tmp_path / "worker.err"
    with worker_process(database, log, err) as proc:
        wait_until(lambda: started(proc, err), what="worker started")
        assert _listening_backends(database) == 1
        client.enqueue("record", {"n": 1})
        wait_until(lambda: len(runs_of(log)) == 2, timeout=10, what="both jobs ran")
    wait_until(lambda: _listening_backends(database) == 0, timeout=10, what="the worker's gone")


def test_an_enqueue_after_the_server_dropped_the_connection_fails_once_then_reconnects(
    client: instar.App, database: str
) -> None:
    first = client.enqueue("record", {"n": 0})
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND query LIKE %s",
            ("%INSERT INTO jobs%",),
        ).fetchone()
    assert killed is not None and killed[0] >= 1
    try:
        client.enqueue("record", {"n": 1})
    except instar.errors.DatabaseUnavailable as exc:  # it cannot know whether that one was written
        assert "unavailable" in str(exc)
    after = client.enqueue("record", {"n": 2})
    assert after.id > first.id
    assert client.get(after.id).state is State.READY
