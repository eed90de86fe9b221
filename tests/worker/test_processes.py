"""Several worker processes on one SQLite file, and a worker killed mid-job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import instar
from instar.lifecycle import State
from instar.maintenance.runner import Maintenance
from tests.jobs_app import app as jobs_app

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def worker_process(
    database: str, log: Path, *args: str, app: str = "tests.jobs_app:app"
) -> Iterator[subprocess.Popen[bytes]]:
    """``instar worker`` of ``app`` as a real subprocess, stopped (or killed) at
    the end; yields once the worker says it has started. Its log goes to a file
    beside ``log`` (a pipe nobody reads could fill up and stall it)."""
    env = {**os.environ, "INSTAR_TEST_LOG": str(log)}
    command = [sys.executable, "-m", "instar.cli.main", "worker", "--app", app]
    err_path = log.with_name(f"{log.name}.{uuid.uuid4().hex[:6]}.err")
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [*command, "--database", database, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        _wait_until(lambda: b" started " in err_path.read_bytes() or proc.poll() is not None)
        assert proc.poll() is None, err_path.read_text()
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_until(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
def client(database: str) -> Iterator[instar.App]:
    with instar.App(database) as app:
        app.registry.update(jobs_app.registry)
        yield app


@pytest.mark.slow
def test_two_worker_processes_run_each_of_500_jobs_exactly_once(
    client: instar.App, database: str, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    with (
        worker_process(database, log, "--concurrency", "8"),
        worker_process(database, log, "--concurrency", "8"),
    ):
        jobs = client.enqueue_many("record", [{"n": n} for n in range(500)])
        _wait_until(lambda: client.counts().get(State.COMPLETED, 0) == 500)
    runs = [line.split() for line in log.read_text().splitlines()]
    per_job = Counter(int(n) for n, _ in runs)
    assert per_job == Counter(range(500))
    assert len({pid for _, pid in runs}) == 2, "both processes should have taken a share"
    claims = [e for j in jobs[:50] for e in client.history(j.id) if e.to_state is State.RUNNING]
    assert len(claims) == 50


@pytest.mark.slow
def test_a_job_of_a_worker_killed_mid_job_is_rerun_elsewhere_after_its_lease_expires(
    client: instar.App, database: str, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    job = client.enqueue("sleepy", {"seconds": 60})
    with worker_process(database, log, "--queue", "fragile") as doomed:
        _wait_until(lambda: log.exists() and "attempt 1" in log.read_text())
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
    first_worker = client.get(job.id).worker
    with worker_process(database, log, "--queue", "fragile"):
        done = client.wait(job.id, timeout=30)
    assert (done.state, done.attempt, done.result) == (State.COMPLETED, 2, "done on attempt 2")
    assert done.worker != first_worker
    path = [
        (e.from_state, e.to_state) for e in client.history(job.id) if e.from_state != e.to_state
    ]
    assert path == [
        (None, State.READY),
        (State.READY, State.RUNNING),
        (State.RUNNING, State.ORPHANED),
        (State.ORPHANED, State.READY),
        (State.READY, State.RUNNING),
        (State.RUNNING, State.COMPLETED),
    ]
    assert len(log.read_text().splitlines()) == 2


@pytest.mark.slow
def test_live_workers_keep_every_job_whatever_the_lease(
    client: instar.App, database: str, tmp_path: Path
) -> None:
    """Six jobs of three seconds on one-second leases, over three worker processes:
    the heartbeat keeps every lease, so each job runs once and none is orphaned."""
    log = tmp_path / "runs.log"
    with (
        worker_process(database, log, "--queue", "leased", "--concurrency", "2"),
        worker_process(database, log, "--queue", "leased", "--concurrency", "2"),
        worker_process(database, log, "--queue", "leased", "--concurrency", "2"),
    ):
        jobs = client.enqueue_many("record_leased", [{"n": n, "seconds": 3} for n in range(6)])
        _wait_until(lambda: client.counts().get(State.COMPLETED, 0) == 6, timeout=30)
    runs = Counter(int(line.split()[0]) for line in log.read_text().splitlines())
    assert runs == Counter(range(6)), "each job ran once"
    for job in jobs:
        assert State.ORPHANED not in [e.to_state for e in client.history(job.id)]


@pytest.mark.slow
def test_sigterm_releases_an_async_job_after_the_grace_and_exits(
    client: instar.App, database: str, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    job = client.enqueue("sleepy_async", {"seconds": 60})
    with worker_process(database, log, "--queue", "fragile", "--shutdown-grace", "0.2") as proc:
        _wait_until(lambda: client.get(job.id).state is State.RUNNING)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    released = client.get(job.id)
    # Released uncounted: it shows the attempt it ran, and its next run continues it.
    assert (released.state, released.attempt, released.rerun) == (State.READY, 1, True)
    assert client.history(job.id)[-1].trigger == "released"


@pytest.mark.slow
def test_sigterm_waits_for_a_def_handler_and_a_second_signal_leaves_its_job_to_its_lease(
    client: instar.App, database: str, tmp_path: Path
) -> None:
    """A def handler cannot be stopped: its job must not go back to ready while it
    can still act (another worker would run it a second time)."""
    log = tmp_path / "runs.log"
    job = client.enqueue("sleepy", {"seconds": 60})
    with worker_process(database, log, "--queue", "fragile", "--shutdown-grace", "0.2") as proc:
        _wait_until(lambda: client.get(job.id).state is State.RUNNING)
        proc.send_signal(signal.SIGTERM)
        time.sleep(2.5)  # the grace, and more than two of its one-second leases
        assert proc.poll() is None, "the worker waits for its def handler"
        held = client.get(job.id)
        assert held.state is State.RUNNING, "its lease is kept alive while the handler runs"
        assert [e.trigger for e in client.history(job.id)][-1] == "claimed", "not released"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert client.get(job.id).state is State.RUNNING, "left to its lease, not released"
    maintenance = Maintenance(client.engine, "rescuer")

    def rescued() -> bool:  # once its lease (one second) has run out
        maintenance.run_once()
        return client.get(job.id).state is State.READY

    _wait_until(rescued)
    moves = [e.to_state for e in client.history(job.id) if e.from_state != e.to_state]
    assert moves[-2:] == [State.ORPHANED, State.READY]
