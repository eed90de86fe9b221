"""Prometheus metrics of a worker process (``instar worker --metrics-port``),
scraped over HTTP, on each backend."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import instar
from instar.lifecycle import State
from tests.flow_app import app as flow_app
from tests.worker.test_processes import _wait_until, worker_process


@pytest.fixture
def client(database: str) -> Iterator[instar.App]:
    with instar.App(database) as app:
        app.registry.update(flow_app.registry)
        yield app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _samples(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], metric: str, /, **labels: str
) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


@pytest.mark.slow
def test_metrics_scraped_over_http_show_the_transitions_runs_and_retries_just_made(
    client: instar.App, database: str, tmp_path: Path
) -> None:
    port = _free_port()
    done = [client.enqueue("per_user", {"user": n, "seconds": 0.01}) for n in range(5)]
    flaky = client.enqueue("flaky")
    waiting = [client.enqueue("one_at_a_time", {"seconds": 2}) for _ in range(2)]
    with worker_process(
        database,
        tmp_path / "log",
        "--metrics-port",
        str(port),
        "--shutdown-grace",
        "0",
        app="tests.flow_app:app",
    ):
        jobs = [*done, flaky]
        _wait_until(lambda: all(client.get(j.id).state is State.COMPLETED for j in jobs), 30)
        _wait_until(lambda: client.get(waiting[0].id).state is State.RUNNING, 30)
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}

        def scraped() -> bool:
            samples.update(_samples(port))
            return (
                _value(
                    samples, "instar_transitions_total", from_state="running", to_state="completed"
                )
                >= 6
            )

        _wait_until(scraped, 10)
    assert _value(samples, "instar_transitions_total", from_state="ready", to_state="running") == 8
    assert (
        _value(samples, "instar_transitions_total", from_state="running", to_state="backing-off")
        == 1
    )
    assert _value(samples, "instar_job_run_seconds_count", name="per_user") == 5
    assert _value(samples, "instar_job_queue_wait_seconds_count", name="per_user") == 5
    assert _value(samples, "instar_retries_total", name="flaky") == 1
    assert _value(samples, "instar_heartbeats_total") >= 1
    assert _value(samples, "instar_maintenance_moves_total", service="timers") >= 1  # the retry
    assert _value(samples, "instar_limit_running", kind="queue", name="single") == 1
    assert _value(samples, "instar_limit_waiting", kind="queue", name="single") == 1
    assert _value(samples, "instar_jobs", queue="single", state="running") == 1


def test_a_worker_asked_for_metrics_on_a_taken_port_says_so_and_runs_nothing(
    client: instar.App, database: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        job = client.enqueue("per_user", {"user": 1})
        from tests.acceptance.test_cli import instar as cli

        ran = cli(
            "worker",
            "--app",
            "tests.flow_app:app",
            "--burst",
            "--metrics-port",
            str(port),
            database=database,
        )
    assert ran.returncode != 0
    assert f"cannot serve metrics on 127.0.0.1:{port}" in ran.stderr
    assert client.get(job.id).state is State.READY
