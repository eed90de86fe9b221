"""Text that is not valid Unicode is data, not a crash; one bad report never
blocks the others; and what cannot succeed on retry is not retried."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import pytest

import instar
from instar.control import Suspend
from instar.lifecycle import State
from tests.conftest import running_worker

S = State
NOT_UTF8 = os.fsdecode(b"/uploads/caf\xe9.txt")  # "/uploads/caf\udce9.txt": a lone surrogate


def moves(app: instar.App, job_id: int) -> list[State]:
    return [e.to_state for e in app.history(job_id) if e.from_state != e.to_state]


# -- kind 1: text that is not valid UTF-8, and reports too large or refused ------------------


def test_an_error_message_that_is_not_utf8_is_kept_and_blocks_no_other_job(
    app: instar.App,
) -> None:
    runs: list[int] = []

    @app.job(retry=instar.Retry(max_attempts=1))
    def upload() -> None:
        raise FileNotFoundError(f"missing {NOT_UTF8}")

    @app.job
    def unrelated(n: int) -> int:
        runs.append(n)
        return n

    bad = upload.enqueue()
    good = unrelated.enqueue(n=1)
    app.run_worker(burst=True)
    failed = app.get(bad.id)
    assert failed.state is S.FAILED
    assert failed.error is not None
    assert (failed.error["type"], failed.error["message"]) == (
        "FileNotFoundError",
        f"missing {NOT_UTF8}",
    )
    assert app.history(bad.id)[-1].detail["message"] == f"missing {NOT_UTF8}"
    assert (app.get(good.id).state, runs) == (S.COMPLETED, [1]), "the other job ran once"


def test_a_progress_message_that_is_not_utf8_is_shown_and_the_job_completes(
    app: instar.App,
) -> None:
    @app.job
    def halfway(ctx: instar.Context) -> str:
        ctx.progress(1, 2, "half \udc80")
        return "done"

    job = halfway.enqueue()
    with running_worker(app):
        done = app.wait(job.id, timeout=10)
    assert done.state is S.COMPLETED
    assert done.progress is not None and done.progress.message == "half \udc80"


def test_a_result_holding_a_file_name_that_is_not_utf8_reads_back_everywhere(
    app: instar.App,
) -> None:
    @app.job
    def listing() -> list[str]:
        return ["a.txt", NOT_UTF8]

    job = listing.enqueue()
    app.run_worker(burst=True)
    assert app.get(job.id).result == ["a.txt", NOT_UTF8]
    assert [j.result for j in app.jobs()] == [["a.txt", NOT_UTF8]]
    assert app.history(job.id)[-1].to_state is S.COMPLETED


def test_arguments_and_signal_values_that_are_not_utf8_round_trip(app: instar.App) -> None:
    seen: list[Any] = []

    @app.job
    def waits(ctx: instar.Context, path: str) -> None:
        seen.append(path)
        try:
            seen.append(ctx.await_signal(f"ok {NOT_UTF8}"))
        except instar.SignalRejected as rejected:
            seen.append(rejected.reason)

    job = waits.enqueue(path=NOT_UTF8)
    app.run_worker(burst=True)
    [awakeable] = app.awakeables(job.id)
    app.reject(awakeable.id, f"no\x00 {NOT_UTF8}")
    app.run_worker(burst=True)
    assert app.get(job.id).state is S.COMPLETED
    assert seen[0] == NOT_UTF8
    assert seen[-1] == "no\\x00 /uploads/caf\\udce9.txt", "stored escaped, never refused"


def test_an_error_too_large_to_store_is_cut_with_a_marker_not_lost(app: instar.App) -> None:
    @app.job(retry=instar.Retry(max_attempts=2, initial_interval=0, jitter=0))
    def verbose() -> None:
        raise ValueError("x" * 600_000)

    job = verbose.enqueue()
    app.run_worker(burst=True)
    failed = app.get(job.id)
    assert (failed.state, failed.attempt) == (S.FAILED, 2)
    assert failed.error is not None and failed.error["type"] == "ValueError"
    message = failed.error["message"]
    assert message.startswith("xxxx") and message.endswith("[cut: 600,000 characters, 8,192 kept]")
    assert "WorkerLost" not in str(app.history(job.id))


def test_a_progress_message_too_large_is_cut(app: instar.App) -> None:
    @app.job
    def chatty(ctx: instar.Context) -> None:
        ctx.progress(1, 1, "y" * 100_000)

    job = chatty.enqueue()
    app.run_worker(burst=True)
    progress = app.get(job.id).progress
    assert progress is not None and progress.message is not None
    assert len(progress.message) < 1100 and "[cut: 100,000 characters" in progress.message


def test_a_report_the_database_refuses_fails_only_its_own_job(app: instar.App) -> None:
    """A handler ends its run with a report no database takes (a wake-up time that
    is not a number): the rest of the batch is written, and that job fails with
    an error saying its report could not be stored."""
    runs: list[str] = []

    @app.job
    def broken() -> None:
        raise Suspend(float("nan"), {"sleep": "forever"})

    @app.job
    def fine(name: str) -> str:
        runs.append(name)
        return name

    bad = broken.enqueue()
    good = [fine.enqueue(name=n) for n in ("a", "b")]
    app.run_worker(burst=True, concurrency=4)
    failed = app.get(bad.id)
    assert failed.state is S.FAILED
    assert failed.error is not None and failed.error["type"] == "ReportRefused"
    assert "could not store this job's report (suspended)" in failed.error["message"]
    assert [app.get(j.id).state for j in good] == [S.COMPLETED, S.COMPLETED]
    assert sorted(runs) == ["a", "b"], "each job ran once"


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)  # PostgreSQL refuses such input
def test_text_another_writer_stored_as_invalid_utf8_still_reads_back(
    app: instar.App, database: str
) -> None:
    @app.job
    def work() -> None:
        return None

    job = work.enqueue()
    app.run_worker(burst=True)
    with sqlite3.connect(database.removeprefix("sqlite:///")) as conn:
        conn.execute(
            "UPDATE jobs SET result = CAST(? AS TEXT) WHERE id = ?", (b'"caf\xe9"', job.id)
        )
    conn.close()
    assert app.get(job.id).result == "caf\udce9"
    assert [j.id for j in app.jobs()] == [job.id]


# -- kind 3: what cannot succeed on retry is not retried ---------------------------------


def test_a_rejected_signal_fails_the_job_without_a_retry(app: instar.App) -> None:
    @app.job(retry=instar.Retry(max_attempts=3))
    def approval(ctx: instar.Context) -> Any:
        return ctx.await_signal("manager")

    job = approval.enqueue()
    app.run_worker(burst=True)
    [awakeable] = app.awakeables(job.id)
    app.reject(awakeable.id, "over budget")
    app.run_worker(burst=True)
    failed = app.get(job.id)
    assert (failed.state, failed.attempt) == (S.FAILED, 1)
    assert S.BACKING_OFF not in moves(app, job.id)


def test_a_failed_child_fails_its_joining_parent_without_a_retry(app: instar.App) -> None:
    @app.job(retry=instar.Retry(max_attempts=1))
    def child() -> None:
        raise instar.Fatal("no stock")

    @app.job(retry=instar.Retry(max_attempts=3))
    def parent(ctx: instar.Context) -> Any:
        return ctx.join([ctx.spawn(child)])

    job = parent.enqueue()
    app.run_worker(burst=True)
    failed = app.get(job.id)
    assert (failed.state, failed.attempt) == (S.FAILED, 1)
    assert failed.error is not None and failed.error["type"] == "ChildFailed"
    assert "Traceback" not in failed.error["message"], "the child's error, not its traceback"
    assert failed.error["message"].endswith("ended failed: Fatal: no stock")


def test_a_return_value_that_is_not_json_fails_without_a_retry(app: instar.App) -> None:
    calls: list[int] = []

    @app.job(retry=instar.Retry(max_attempts=3))
    def returns_a_set() -> set[int]:
        calls.append(1)
        return {1, 2}

    job = returns_a_set.enqueue()
    app.run_worker(burst=True)
    failed = app.get(job.id)
    assert (failed.state, failed.attempt, len(calls)) == (S.FAILED, 1, 1)
    assert failed.error is not None and failed.error["type"] == "PayloadError"
    assert "return value must be JSON-serialisable" in failed.error["message"]


def test_a_signal_timeout_and_an_error_class_saying_so_are_not_retried(
    app: instar.App,
) -> None:
    class QuotaGone(Exception):
        retriable = False  # decided where the error is defined

    @app.job(retry=instar.Retry(max_attempts=3, initial_interval=0))
    def quota() -> None:
        raise QuotaGone("monthly quota used up")

    @app.job(retry=instar.Retry(max_attempts=3, initial_interval=0))
    def impatient(ctx: instar.Context) -> Any:
        return ctx.await_signal("never", timeout=0)

    jobs = [quota.enqueue(), impatient.enqueue()]
    app.run_worker(burst=True)
    app.run_worker(burst=True)
    for job in jobs:
        ended = app.get(job.id)
        assert (ended.state, ended.attempt) == (S.FAILED, 1), ended.error


def test_an_exception_whose_message_cannot_be_read_still_fails_its_job(app: instar.App) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no words")

    @app.job(retry=instar.Retry(max_attempts=1))
    def odd() -> None:
        raise Unprintable()

    job = odd.enqueue()
    app.run_worker(burst=True)
    failed = app.get(job.id)
    assert failed.state is S.FAILED
    assert failed.error is not None and failed.error["type"].endswith("Unprintable")
    assert "could not be read" in failed.error["message"]
