"""Flow control held across worker processes, on each backend: limits are
checked inside the claim, so no process can see room another has taken."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

import instar
from instar.lifecycle import State
from tests.flow_app import app as flow_app
from tests.worker.test_processes import _wait_until, worker_process

FLOW_APP = "tests.flow_app:app"


@pytest.fixture
def client(database: str) -> Iterator[instar.App]:
    with instar.App(database) as app:
        app.registry.update(flow_app.registry)
        yield app


def _runs(
    app: instar.App, jobs: list[instar.Job], *, by_id: bool = True
) -> list[tuple[float, float, instar.Job]]:
    """(start, end, job) of each run, from the jobs' timelines: the ids of the
    events of its claim and of its end (``by_id``: event ids follow the order in
    which the claims and ends were written, where the times of processes'
    transactions may not), or their times."""
    runs = []
    for job in jobs:
        started = None
        for event in app.history(job.id):
            at = float(event.id) if by_id else event.at.timestamp()
            if event.to_state is State.RUNNING:
                started = at
            elif started is not None and event.from_state is State.RUNNING:
                runs.append((started, at, job))
                started = None
    return runs


def _most_at_once(runs: list[tuple[float, float, instar.Job]]) -> int:
    """The most runs that overlapped (one ending as another starts: not overlapping)."""
    edges = sorted([(start, 1) for start, _, _ in runs] + [(end, -1) for _, end, _ in runs])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


@pytest.mark.slow
def test_a_per_key_limit_of_1_under_4_worker_processes_is_never_exceeded(
    client: instar.App, database: str, tmp_path: Path
) -> None:
    jobs = [client.enqueue("per_user", {"user": n % 4, "seconds": 0.05}) for n in range(32)]
    with ExitStack() as workers:
        for _ in range(4):
            workers.enter_context(
                worker_process(database, tmp_path / "log", "--concurrency", "4", app=FLOW_APP)
            )
        _wait_until(lambda: all(client.get(j.id).state is State.COMPLETED for j in jobs), 60)
    runs = _runs(client, jobs)
    assert len(runs) == 32
    for user in range(4):
        assert _most_at_once([r for r in runs if r[2].args["user"] == user]) == 1
    # Different keys ran side by side: a held-back key never idled the others.
    assert _most_at_once(runs) >= 3


@pytest.mark.slow
def test_two_workers_and_a_queue_of_one_slot_run_one_job_at_a_time(
    client: instar.App, database: str, tmp_path: Path
) -> None:
    jobs = [client.enqueue("one_at_a_time", {"seconds": 0.05}) for _ in range(10)]
    with (
        worker_process(database, tmp_path / "log", app=FLOW_APP),
        worker_process(database, tmp_path / "log", app=FLOW_APP),
    ):
        _wait_until(lambda: all(client.get(j.id).state is State.COMPLETED for j in jobs), 60)
    runs = _runs(client, jobs)
    assert len(runs) == 10
    assert _most_at_once(runs) == 1


@pytest.mark.slow
def test_a_rate_of_10_per_second_holds_within_10_percent_over_5_seconds_across_workers(
    client: instar.App, database: str, tmp_path: Path
) -> None:
    jobs = [client.enqueue("paced") for _ in range(60)]
    with (
        worker_process(database, tmp_path / "log", app=FLOW_APP),
        worker_process(database, tmp_path / "log", app=FLOW_APP),
    ):
        _wait_until(lambda: sum(client.get(j.id).state is State.COMPLETED for j in jobs) >= 56, 30)
    starts = sorted(start for start, _, _ in _runs(client, jobs, by_id=False))
    in_five_seconds = [s for s in starts if s < starts[0] + 5.0]
    # The rate is a ceiling: never above 10 % over it. Below it is throughput a
    # loaded machine may slow a little, but an idle worker never sleeps its
    # fallback poll while a rate it waits on reopens: CI once saw 1.1-s pauses
    # (likely both workers' claims judging the rate closed a moment before it
    # reopened, then finding no rate holding anything back).
    assert 40 <= len(in_five_seconds) <= 55
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert max(gaps) < 0.6
    assert min(gaps) >= 0.1 - 0.01  # never two starts closer than one interval
