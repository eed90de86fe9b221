"""``instar demo``: it runs to the end, quickly, and leaves the story it tells in the database.

The demo prints its story but checks nothing itself: every promise it makes
(each job ends as told, the workers stop cleanly) is asserted here.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

import instar
from instar.demo import handlers, processes, run_demo, story
from instar.demo.story import APPROVAL, ORDERS, REGIONS, REPORT_PAGES, SHIPPED, UNDERPAID, UNPAID
from instar.lifecycle import State
from instar.models import Progress


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=120, color_system=None), out


def _record_workers(monkeypatch: pytest.MonkeyPatch) -> list[processes.WorkerProcess]:
    """Every worker the story starts, kept so a test can see how each ended."""
    started: list[processes.WorkerProcess] = []
    real_start = processes.start_worker

    def start_worker(
        label: str, queues: tuple[str, ...], database: str, folder: Path, concurrency: int
    ) -> processes.WorkerProcess:
        worker = real_start(label, queues, database, folder, concurrency)
        started.append(worker)
        return worker

    monkeypatch.setattr(story, "start_worker", start_worker)
    return started


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo keeps its worker logs in a temporary folder: keep that inside tmp_path."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.mark.slow
def test_the_demo_shows_every_ending_and_leaves_them_in_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = f"sqlite:///{tmp_path / 'demo.db'}"
    console, out = _console()
    started = _record_workers(monkeypatch)

    began = time.monotonic()
    code = run_demo(database, console)
    took = time.monotonic() - began

    text = out.getvalue()
    assert code == 0, text
    assert took < 30, f"the demo took {took:.1f}s"
    assert "every job has ended; workers stopped with SIGTERM" in text
    assert "Jobs by final state" in text
    assert "Timeline of" in text
    assert "paused and resumed" in text
    shipped_title = "(paid, then shipped once its stock job replied): now fulfilment.shipped"
    assert f"History of order {SHIPPED} {shipped_title}" in text
    assert (
        f"History of order {UNPAID} (never paid: cancelled by its 3s timer): now cancelled" in text
    )
    assert re.search(r"^Took \d+\.\ds\.$", text, re.MULTILINE), text
    assert "demo failed" not in text

    # SIGTERM is the graceful stop: every worker the demo did not kill exits with 0.
    assert [(w.label, w.killed) for w in started] == [("A", False), ("B", True), ("C", False)]
    assert [w.proc.returncode for w in started] == [0, -signal.SIGKILL, 0]

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
        for job in images:
            reported = [e for e in app.history(job.id) if e.trigger == "progress"]
            assert len(reported) > 1, "progress on the way, not only at the end"

        flaky = only("fetch_rates")
        assert (flaky.state, flaky.attempt) == (State.COMPLETED, 3)
        assert moves(flaky).count(State.BACKING_OFF) == 2

        declined = only("charge_card")
        assert (declined.state, declined.attempt) == (State.FAILED, 1)
        assert declined.error is not None and declined.error["type"] == "Fatal"
        assert moves(declined) == [State.READY, State.RUNNING, State.FAILED], "no retry"

        exhausted = only("sync_inventory")
        assert (exhausted.state, exhausted.attempt) == (State.FAILED, 2)
        assert moves(exhausted)[-1] is State.FAILED

        delayed = only("send_reminder")
        assert delayed.state is State.COMPLETED
        assert moves(delayed)[:2] == [State.SCHEDULED, State.READY]
        reminder = app.history(delayed.id)
        first_run = next(e for e in reminder if e.to_state is State.RUNNING)
        waited = (first_run.at - reminder[0].at).total_seconds()
        assert waited >= 2.9, f"enqueued with a 3s delay, it ran after {waited:.2f}s"

        video = only("transcode_video")
        assert video.state is State.CANCELLED
        assert moves(video)[-2:] == [State.RUNNING, State.CANCELLED]
        requested = [e for e in app.history(video.id) if e.trigger == "cancel-requested"]
        assert [(e.from_state, e.actor) for e in requested] == [(State.RUNNING, "demo")]

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

        # Paused while running, at a checkpoint; resumed; no step ran twice.
        export = only("export_report")
        assert export.state is State.COMPLETED
        assert moves(export) == [
            State.READY,
            State.RUNNING,
            State.PAUSED,
            State.READY,
            State.RUNNING,
            State.COMPLETED,
        ]
        timeline = app.history(export.id)
        paused = next(e for e in timeline if e.to_state is State.PAUSED)
        resumed = next(e for e in timeline if e.trigger == "resumed")
        assert (paused.from_state, paused.trigger, paused.actor) == (State.RUNNING, "paused", None)
        assert resumed.actor == "demo"
        assert (resumed.at - paused.at).total_seconds() >= 0.9
        steps = [e for e in timeline if e.trigger == "step"]
        pages = [f"page-{n}" for n in range(1, REPORT_PAGES + 1)]
        assert [e.detail["step"] for e in steps] == pages, "each page's step ran once, in order"
        before = [e for e in steps if e.id < paused.id]
        assert 0 < len(before) < REPORT_PAGES
        assert isinstance(export.result, dict)
        assert export.result["pages"] == REPORT_PAGES
        assert export.result["replayed"] == len(before), "the re-run replayed the stored steps"
        assert export.checkpoint == {"pages_done": REPORT_PAGES}

        # Pending until the export completed.
        mail = only("mail_report")
        assert moves(mail) == [State.PENDING, State.READY, State.RUNNING, State.COMPLETED]
        export_done = next(e for e in timeline if e.to_state is State.COMPLETED)
        mail_ready = next(e for e in app.history(mail.id) if e.to_state is State.READY)
        assert mail_ready.trigger == "dependencies-met"
        assert mail_ready.id > export_done.id
        assert [job.id for job in app.dependencies(mail.id)] == [export.id]

        # Suspended on a signal, resolved from outside, completed with its value.
        refund = only("refund_order")
        assert moves(refund) == [
            State.READY,
            State.RUNNING,
            State.SUSPENDED,
            State.READY,
            State.RUNNING,
            State.COMPLETED,
        ]
        [approval] = app.awakeables(refund.id)
        assert (approval.name, approval.state, approval.value) == (
            "approval",
            "resolved",
            APPROVAL,
        )
        assert refund.result == f"refunded 129.00 EUR, approved by {APPROVAL['by']}"
        woken = next(e for e in app.history(refund.id) if e.trigger == "signal")
        assert (woken.from_state, woken.to_state, woken.actor) == (
            State.SUSPENDED,
            State.READY,
            "demo",
        )

        # A parent joined its children, suspended meanwhile, and combined their results.
        catalog = only("build_catalog")
        children = app.children(catalog.id)
        assert [c.args["region"] for c in children] == list(REGIONS)
        assert [(c.state, c.result) for c in children] == [
            (State.COMPLETED, products) for products in REGIONS.values()
        ]
        assert all(c.parent_id == catalog.id for c in children)
        assert catalog.state is State.COMPLETED
        assert catalog.result == {"regions": 3, "prices": sum(REGIONS.values())}
        assert catalog.result["prices"] == sum(c.result for c in children)
        assert moves(catalog) == [
            State.READY,
            State.RUNNING,
            State.SUSPENDED,
            State.READY,
            State.RUNNING,
            State.COMPLETED,
        ]

        workers = {
            e.worker for job in app.jobs() for e in app.history(job.id) if e.worker is not None
        }
        # An order paid (after a payment short of its total was refused) and
        # shipped: its packing state enqueued reserve_stock, whose result came
        # back as stock_reserved and moved it on, through the guard, in a worker.
        m = app.machines
        shipped = m.get("order", SHIPPED)
        assert (shipped.state, shipped.final) == ("fulfilment.shipped", False)
        assert shipped.context == {
            "order_id": SHIPPED,
            "total": ORDERS[SHIPPED],
            "paid": ORDERS[SHIPPED],
            "carrier": "dhl",
        }
        [refused] = m.refusals("order", SHIPPED)
        assert (refused.event, refused.reason, refused.actor) == ("pay", "condition_false", "demo")
        assert f"order {SHIPPED}: pay {UNDERPAID} refused (condition_false" in text
        reserve = only("reserve_stock")
        assert (reserve.state, reserve.args) == (State.COMPLETED, {"order": SHIPPED})
        entries = m.history("order", SHIPPED)
        assert [(e.event, e.to_state, e.actor) for e in entries] == [
            (None, "placed", "demo"),
            ("pay", "paid", "demo"),
            ("ship", "fulfilment.packing", "demo"),
            ("stock_reserved", "fulfilment.shipped", f"job {reserve.id}"),
        ]
        enqueued = app.history(reserve.id)[0]
        assert abs((enqueued.at - entries[2].at).total_seconds()) < 0.001, "enqueued by ship"
        completed = next(e for e in app.history(reserve.id) if e.to_state is State.COMPLETED)
        assert entries[3].at == completed.at, "the reply moved it as the job completed"
        assert entries[3].data == reserve.result
        assert f"order {SHIPPED}: fulfilment.packing → fulfilment.shipped (stock_reserved " in text
        assert f"the reply of #{reserve.id})" in text

        # An order never paid: its payment timer cancelled it, in a worker.
        unpaid = m.get("order", UNPAID)
        assert (unpaid.state, unpaid.final) == ("cancelled", True)
        placed, timed_out = m.history("order", UNPAID)
        assert (timed_out.kind, timed_out.event, timed_out.actor) == (
            "timer",
            "payment_timeout",
            "timer",
        )
        waited = (timed_out.at - placed.at).total_seconds()
        assert waited >= 2.99, f"cancelled {waited:.2f}s after it was placed, not 3s"
        assert m.refusals("order", UNPAID) == []
        assert f"order {UNPAID}: placed → cancelled (its timer payment_timeout" in text
        assert all(m.verify("order", key).ok for key in ORDERS)
    pids = {int(worker.rsplit(":", 2)[1]) for worker in workers}
    assert len(pids) == 3  # A, the killed B, and C
    assert not [pid for pid in pids if _alive(pid)], "the demo left worker processes behind"


def test_a_worker_that_cannot_start_fails_the_demo_without_leaving_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = _record_workers(monkeypatch)
    broken = [sys.executable, "-c", "raise SystemExit(3)"]
    monkeypatch.setattr(processes, "worker_command", lambda: broken)
    console, out = _console()

    code = run_demo(f"sqlite:///{tmp_path / 'demo.db'}", console)

    assert code == 1
    assert "worker A exited with code 3" in out.getvalue()
    assert started and all(w.proc.returncode is not None for w in started)


def test_the_live_view_fits_an_80_column_terminal(tmp_path: Path) -> None:
    """Every row at its widest: a long state, a progress bar and message, a killed worker."""
    out = io.StringIO()
    narrow = Console(file=out, width=80, color_system=None)
    done = subprocess.Popen([sys.executable, "-c", ""])
    done.wait()
    with instar.App(f"sqlite:///{tmp_path / 'demo.db'}") as client:
        client.registry.update(handlers.app.registry)
        plan = story.enqueue_jobs(client)
        log = (tmp_path / "worker.log").open("ab")
        killed = processes.WorkerProcess("B", ("ingest",), done, log, killed=True)
        tour = story.Tour(client, client.database, tmp_path, narrow, plan, [killed])
        tour.open_orders()
        tour.refresh_orders()
        tour.refresh()  # it tells the enqueued jobs' first moves: leave those lines out
        out.seek(0)
        out.truncate()
        progress = Progress(8, 8, "a message far too long for the column")
        for job_id, job in tour.jobs.items():
            tour.jobs[job_id] = replace(
                job, state=State.BACKING_OFF, progress=progress, worker=f"h:{done.pid}:x"
            )
        parent = tour.jobs[plan.parent]
        for child_id in (901, 902, 903):
            tour.jobs[child_id] = replace(
                tour.jobs[plan.images[0]], id=child_id, name="price_region", parent_id=parent.id
            )
            tour.children.append(child_id)
        tour.jobs[plan.paused] = replace(tour.jobs[plan.paused], state=State.PAUSED)
        tour.jobs[plan.orphaned] = replace(tour.jobs[plan.orphaned], state=State.RUNNING)
        narrow.print(tour.render())
        log.close()
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    table = "\n".join(lines)
    assert table.count("└ price_region") == 3
    assert table.count("B (killed)") == 1  # only the running job is flagged
    assert "freed" in table
    assert f"orders: {SHIPPED} fulfilment.packing  {UNPAID} placed" in table
    rows = [line.split()[0] for line in lines if line.startswith("#")]
    assert rows == [f"#{job_id}" for job_id in tour.table_order()]
    assert rows.index(f"#{plan.parent}") + 1 == rows.index("#901"), "children under the parent"
