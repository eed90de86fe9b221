"""The timeline rolled up into state flows: counted once, whoever leads."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import instar
from instar.lifecycle import State
from instar.maintenance.state_flows import FlowSettings, StateFlows
from instar.store.sql_store import LIVE_COUNTS


def test_two_leaders_rolling_up_at_once_count_every_event_once(database: str) -> None:
    with instar.App(database) as first, instar.App(database) as second:

        @first.job(name="work", queue="q")
        def work() -> None: ...

        jobs = first.enqueue_many("work", [{}] * 30)
        for job in jobs[:10]:
            first.cancel(job.id)
        small = FlowSettings(page=7, pages=100)
        leaders = [StateFlows(app.engine, small) for app in (first, second)]
        threads = [threading.Thread(target=leader.run_once) for leader in leaders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        totals = {(q, s): n for q, s, n in first.reader.finished_totals()}
        assert totals == {("q", State.CANCELLED): 10}
        flows = first.reader.flows_since(0)
        assert {(f.state, f.entered, f.exited) for f in flows} == {(State.CANCELLED, 10, 0)}
        assert first.reader.rollup_cursor("state_flows") == first.last_event_id()
        live = {(q, s): n for q, s, n in first.reader.live_counts()}
        assert live == {("q", State.READY): 20}


def test_each_live_state_is_counted_through_its_partial_index(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with instar.App(f"sqlite:///{path}") as app:
        app.migrate()
    with sqlite3.connect(path) as conn:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {LIVE_COUNTS}")]
    conn.close()
    scans = [step for step in plan if step.startswith(("SCAN", "SEARCH"))]
    assert scans and all(
        "USING INDEX jobs_" in step or "USING COVERING INDEX jobs_" in step for step in scans
    ), plan
