"""``instar demo``: it runs to the end, quickly, and leaves the story it tells in the database."""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from pathlib import Path

import pytest
from rich.console import Console

import instar
from instar import demo
from instar.lifecycle import State


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=120, color_system=None), out


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo keeps its worker logs in a temporary folder: keep that inside tmp_path."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.mark.slow
def test_the_demo_shows_every_ending_and_leaves_them_in_the_database(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'demo.db'}"
    console, out = _console()

    began = time.monotonic()
    code = demo.run_demo(database, console)
    took = time.monotonic() - began

    text = out.getvalue()
    assert code == 0, text
    assert took < 30, f"the demo took {took:.1f}s"
    assert "Jobs by final state" in text
    assert "Timeline of" in text
    assert "✗" not in text

    with instar.App(database) as app:

        def only(name: str) -> instar.Job:
            [job] = app.jobs(name=name)
            return job

        def moves(job: instar.Job) -> list[State]:
            return [e.to_state for e in app.history(job.id) if e.from_state != e.to_state]

        images = app.jobs(name="resize_image")
        assert len(images) == 6
        assert {job.state for job in images} == {State.COMPLETED}
        assert all(job.progress is not None and job.progress.message for job in images)

        flaky = only("fetch_rates")
        assert (flaky.state, flaky.attempt) == (State.COMPLETED, 3)
        assert moves(flaky).count(State.BACKING_OFF) == 2

        declined = only("charge_card")
        assert (declined.state, declined.attempt) == (State.FAILED, 1)
        assert declined.error is not None and declined.error["type"] == "Fatal"

        exhausted = only("sync_inventory")
        assert (exhausted.state, exhausted.attempt) == (State.FAILED, 2)
        assert moves(exhausted)[-1] is State.FAILED

        delayed = only("send_reminder")
        assert delayed.state is State.COMPLETED
        assert moves(delayed)[:2] == [State.SCHEDULED, State.READY]

        video = only("transcode_video")
        assert video.state is State.CANCELLED
        assert moves(video)[-2:] == [State.RUNNING, State.CANCELLED]

        ingest = only("ingest_batch")
        assert (ingest.state, ingest.attempt) == (State.COMPLETED, 2)
        assert moves(ingest) == [
            State.READY,
            State.RUNNING,
            State.ORPHANED,
            State.READY,
            State.RUNNING,
            State.COMPLETED,
        ]
        runners = [e.worker for e in app.history(ingest.id) if e.to_state is State.RUNNING]
        assert len(set(runners)) == 2, "a second worker should finish the orphaned job"

        workers = {
            e.worker for job in app.jobs() for e in app.history(job.id) if e.worker is not None
        }
    pids = {int(worker.rsplit(":", 2)[1]) for worker in workers}
    assert len(pids) == 3  # A, the killed B, and C
    assert not [pid for pid in pids if _alive(pid)], "the demo left worker processes behind"


def test_a_worker_that_cannot_start_fails_the_demo_without_leaving_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[demo.WorkerProcess] = []
    real_start = demo.start_worker

    def start_worker(
        label: str, queues: tuple[str, ...], database: str, folder: Path, concurrency: int
    ) -> demo.WorkerProcess:
        worker = real_start(label, queues, database, folder, concurrency)
        started.append(worker)
        return worker

    broken = [sys.executable, "-c", "raise SystemExit(3)"]
    monkeypatch.setattr(demo, "worker_command", lambda: broken)
    monkeypatch.setattr(demo, "start_worker", start_worker)
    console, out = _console()

    code = demo.run_demo(f"sqlite:///{tmp_path / 'demo.db'}", console)

    assert code == 1
    assert "worker A exited with code 3" in out.getvalue()
    assert started and all(w.proc.returncode is not None for w in started)
