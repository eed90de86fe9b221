"""What only the SQLite backend promises: its pragmas and its query plans."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import instar
from instar.store.sqlite.store import Q, SQLiteStore


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "jobs.db")


def test_the_store_uses_wal_and_full_sync_by_default(path: str) -> None:
    store = SQLiteStore(path)
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_synchronous_normal_is_an_option_and_nonsense_is_refused(path: str) -> None:
    store = SQLiteStore(path, synchronous="normal")
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    store.close()
    with pytest.raises(instar.ConfigurationError, match="not a SQLite mode"):
        SQLiteStore(path, synchronous="sometimes")
    with pytest.raises(instar.ConfigurationError, match="unknown SQLite option"):
        instar.App(f"sqlite:///{path}?fast=yes").jobs()


def _plan(path: str, query: str, params: dict[str, object]) -> str:
    store = SQLiteStore(path)
    store.migrate()
    conn = sqlite3.connect(path)
    rows = conn.execute("EXPLAIN QUERY PLAN " + query, params).fetchall()
    conn.close()
    store.close()
    return " | ".join(str(row[-1]) for row in rows)


def test_claiming_reads_only_the_ready_index(path: str) -> None:
    for names in (None, '["a", "b"]'):
        params = {"worker": "w", "now": 0.0, "limit": 10, "names": names}
        plan = _plan(path, Q["claim_any_queue"], params)
        assert "jobs_ready" in plan
        assert "SCAN jobs" not in plan.replace("SCAN jobs USING INDEX jobs_ready", "")


def test_timers_and_rescue_read_only_their_partial_indexes(path: str) -> None:
    timers = _plan(path, Q["due_timers"], {"now": 0.0, "limit": 10})
    assert "jobs_scheduled" in timers and "jobs_backing_off" in timers
    rescue = _plan(path, Q["expired_leases"], {"now": 0.0, "limit": 10})
    assert "jobs_leased" in rescue


def test_a_second_process_sees_the_schema_it_migrated_concurrently(path: str) -> None:
    first, second = SQLiteStore(path), SQLiteStore(path)
    assert first.migrate() == second.migrate()
    first.close()
    second.close()


def test_a_file_that_is_not_a_database_is_one_clear_error(path: str) -> None:
    Path(path).write_bytes(b"these are my holiday notes, not a database\n" * 200)
    with pytest.raises(instar.DatabaseCorrupt, match=r"is damaged.*restore it from a backup"):
        instar.App(f"sqlite:///{path}").jobs()


def test_a_damaged_page_is_found_by_the_check_and_named_by_every_read(path: str) -> None:
    with instar.App(f"sqlite:///{path}") as app:

        @app.job
        def work(n: int) -> int:
            return n

        app.enqueue_many(work, [{"n": n} for n in range(2000)])
    checkpoint = sqlite3.connect(path)
    checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the main file
    checkpoint.close()
    data = bytearray(Path(path).read_bytes())
    page = 4096
    middle = len(data) // page // 2
    for n in range(middle, middle + 3):  # scribble over three pages in the middle
        data[page * n + 100 : page * n + 200] = b"\xff" * 100
    Path(path).write_bytes(bytes(data))
    store = SQLiteStore(path)
    assert store.check() != [], "the check finds the damage"
    store.close()
    with (
        pytest.raises(instar.DatabaseCorrupt, match="is damaged"),
        instar.App(f"sqlite:///{path}") as app,
    ):
        app.jobs(limit=5000)
