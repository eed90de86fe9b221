"""``instar worker --processes N``: one command forking N workers, on each backend."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import instar
from instar.lifecycle import State
from instar.maintenance.runner import Maintenance
from tests.jobs_app import app as jobs_app
from tests.worker.test_metrics_processes import _samples, _value
from tests.worker.test_processes import ROOT, _wait_until

COMMAND = [sys.executable, "-m", "instar.cli.main", "worker", "--app", "tests.jobs_app:app"]


@pytest.fixture
def client(database: str) -> Iterator[instar.App]:
    with instar.App(database) as app:
        app.registry.update(jobs_app.registry)
        yield app


class Forked:
    """An ``instar worker --processes N`` subprocess, its stderr in a file."""

    def __init__(self, database: str, tmp_path: Path, *args: str) -> None:
        self.err = tmp_path / f"worker-{time.monotonic_ns()}.err"
        with self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [*COMMAND, "--database", database, *args],
                cwd=ROOT,
                env={**os.environ, "INSTAR_TEST_LOG": str(tmp_path / "runs.log")},
                stdout=subprocess.PIPE,
                stderr=err,
            )

    def text(self) -> str:
        return self.err.read_text()

    def wait_started(self, processes: int) -> list[int]:
        """The children's pids, once each has said that its worker started."""
        _wait_until(
            lambda: (
                len(re.findall(r"worker \S+ started", self.text())) == processes
                or self.proc.poll() is not None
            )
        )
        assert self.proc.poll() is None, self.text()
        found = re.search(r"worker processes forked \(pids ([\d, ]+)\)", self.text())
        assert found is not None, self.text()
        return [int(pid) for pid in found.group(1).split(", ")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def forked(database: str, tmp_path: Path) -> Iterator[type[Forked]]:
    started: list[Forked] = []

    class Tracked(Forked):
        def __init__(self, database: str, tmp_path: Path, *args: str) -> None:
            super().__init__(database, tmp_path, *args)
            started.append(self)

    yield Tracked
    for each in started:
        each.stop()


def _ended(pid: int) -> bool:
    """Gone, or a zombie nobody reaps (a container's first process may not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.slow
def test_one_command_forks_two_workers_that_run_each_of_500_jobs_exactly_once(
    client: instar.App, database: str, tmp_path: Path, forked: type[Forked]
) -> None:
    worker = forked(database, tmp_path, "--processes", "2", "--concurrency", "8")
    pids = worker.wait_started(2)
    # 5 ms each: neither process can drain the queue before the other claims.
    client.enqueue_many("record_slowly", [{"n": n, "seconds": 0.005} for n in range(500)])
    _wait_until(lambda: client.counts().get(State.COMPLETED, 0) == 500)
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=20) == 0, worker.text()
    runs = [line.split() for line in (tmp_path / "runs.log").read_text().splitlines()]
    assert Counter(int(n) for n, _ in runs) == Counter(range(500)), "each job ran once"
    assert {int(pid) for _, pid in runs} == set(pids), "both processes took a share"
    assert "worker done: 500 completed, 0 failed, 0 released, 0 refused" in worker.text()
    assert all(_ended(pid) for pid in pids)


def test_burst_processes_report_their_counts_added_up(
    client: instar.App, database: str, tmp_path: Path
) -> None:
    client.enqueue_many("record", [{"n": n} for n in range(300)])
    done = subprocess.run(
        [*COMMAND, "--database", database, "--processes", "3", "--burst", "--json", "--quiet"],
        cwd=ROOT,
        env={**os.environ, "INSTAR_TEST_LOG": str(tmp_path / "runs.log")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(set(report["workers"])) == 3
    assert (report["completed"], report["failed"], report["released"]) == (300, 0, 0)
    assert report["by_state"] == {"completed": 300}
    assert done.stderr.strip() == "worker done: 300 completed, 0 failed, 0 released, 0 refused"


@pytest.mark.slow
def test_a_worker_process_killed_stops_the_others_and_the_command_fails_with_its_signal(
    database: str, tmp_path: Path, forked: type[Forked]
) -> None:
    worker = forked(database, tmp_path, "--processes", "2")
    first, second = worker.wait_started(2)
    os.kill(second, signal.SIGKILL)
    assert worker.proc.wait(timeout=20) == 128 + signal.SIGKILL
    text = worker.text()
    assert f"worker process 1 (pid {second}) ended on its own (killed by SIGKILL)" in text
    assert re.search(rf"worker \S+:{first}:\S+ stopped", text), text
    assert _ended(first)


@pytest.mark.slow
def test_worker_processes_stop_by_themselves_once_their_parent_is_killed(
    database: str, tmp_path: Path, forked: type[Forked]
) -> None:
    worker = forked(database, tmp_path, "--processes", "2")
    pids = worker.wait_started(2)
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait()
    _wait_until(lambda: all(_ended(pid) for pid in pids), timeout=15)
    assert worker.text().count("the parent process") == 2


@pytest.mark.slow
def test_a_second_sigterm_to_the_parent_ends_a_process_waiting_for_its_def_handler(
    client: instar.App, database: str, tmp_path: Path, forked: type[Forked]
) -> None:
    """Each signal is passed on once: the first asks the workers to finish, the
    second ends the one whose def handler still runs, its job left to its lease."""
    job = client.enqueue("sleepy", {"seconds": 60})
    worker = forked(
        database, tmp_path, "--processes", "2", "--queue", "fragile", "--shutdown-grace", "0.2"
    )
    worker.wait_started(2)
    _wait_until(lambda: client.get(job.id).state is State.RUNNING)
    worker.proc.send_signal(signal.SIGTERM)
    time.sleep(2.5)  # the grace, and more than two of its one-second leases
    assert worker.proc.poll() is None, "the worker waits for its def handler"
    assert client.get(job.id).state is State.RUNNING
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=20) == 0, worker.text()
    assert "second SIGTERM: stopping now" in worker.text()
    maintenance = Maintenance(client.engine, "rescuer")

    def rescued() -> bool:  # once its lease (one second) has run out
        maintenance.run_once()
        return client.get(job.id).state is State.READY

    _wait_until(rescued)


def _two_free_ports() -> int:
    """A port free together with the next one."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two free ports side by side")


@pytest.mark.slow
def test_each_worker_process_serves_its_own_metrics_on_the_next_port(
    client: instar.App, database: str, tmp_path: Path, forked: type[Forked]
) -> None:
    port = _two_free_ports()
    worker = forked(database, tmp_path, "--processes", "2", "--metrics-port", str(port))
    worker.wait_started(2)
    client.enqueue_many("record_slowly", [{"n": n, "seconds": 0.005} for n in range(200)])
    _wait_until(lambda: client.counts().get(State.COMPLETED, 0) == 200)
    transition = {"from_state": "running", "to_state": "completed"}
    counted: list[float] = []

    def scraped() -> bool:
        counted[:] = [
            _value(_samples(p), "instar_transitions_total", **transition) for p in (port, port + 1)
        ]
        return sum(counted) == 200

    _wait_until(scraped, 10)
    assert all(n > 0 for n in counted), f"both processes ran jobs: {counted}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--processes", "0"], "--processes must be from 1 to 256, got 0"),
        (["--processes", "257"], "--processes must be from 1 to 256, got 257"),
        (
            ["--processes", "3", "--metrics-port", "65534"],
            "--metrics-port 65534 with --processes 3 would need ports up to 65536",
        ),
    ],
)
def test_a_process_count_out_of_range_is_refused_before_anything_starts(
    args: list[str], message: str, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'jobs.db'}"
    done = subprocess.run(
        [*COMMAND, "--database", database, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "jobs.db").exists(), "nothing was created"
