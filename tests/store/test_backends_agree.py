"""Both backends answer to the same SQL block names and end with the same
tables and columns after migrating, except where a backend needs something of
its own (listed here with the reason)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from instar.store import open_store
from instar.store.postgres.store import Q as POSTGRES_QUERIES
from instar.store.sqlite.store import Q as SQLITE_QUERIES
from tests.conftest import POSTGRES, _postgres_or_skip

SQLITE_ONLY = {
    "pragmas": "WAL and the busy timeout are per connection",
    "data_version": "how other processes' commits are noticed",
    "max_job_id": "bulk insert numbers rows under the write lock",
    "quick_check": "a check of the file's pages (PostgreSQL checks its own)",
    "staged_moves": "moves read as columns of a table: SQLite parses JSON again per field",
    "clear_staged_moves": "moves read as columns of a table: SQLite parses JSON again per field",
    "stage_move": "moves read as columns of a table: SQLite parses JSON again per field",
    "insert_enqueued_event": "one job's first event from its values (PostgreSQL: enqueue_one)",
    "claim_any_queue": "no array type: one claim per queue filter shape",
    "claim_from_queues": "no array type: one claim per queue filter shape",
    "rollup_batch_end": "ids are commit order: a batch of the feed is an id range",
    "roll_up_flows": "no data-modifying CTE: flows and totals are two statements",
    "roll_up_totals": "no data-modifying CTE: flows and totals are two statements",
    "renew_leases": "no data-modifying CTE: a heartbeat renews, then reads, in two statements",
}
POSTGRES_ONLY = {
    "create_schema": "Instar's tables may live in a schema of their own",
    "migration_lock": "concurrent first migrations wait on an advisory lock",
    "current_search_path": "transactional enqueue restores the caller's search_path",
    "set_local_search_path": "transactional enqueue and migrations",
    "insert_jobs_bulk": "bulk insert through unnest with ordinality",
    "reserve_job_ids": "ids for jobs written with COPY",
    "copy_jobs": "large varied batches written with COPY in binary",
    "copy_enqueued_events": "their first events, with COPY in binary",
    "claim": "one claim with an optional queue array",
    "claim_alone_rest": "a claim alone is one statement in autocommit (a data-modifying CTE)",
    "move_alone_rest": "moves alone are one statement in autocommit (a data-modifying CTE)",
    "notify": "wake-ups through NOTIFY",
    "claim_plan": "the claim walks jobs_ready in order even where statistics are stale",
    "roll_up": "a batch of the feed in commit order (tx, id) counted in one statement",
    "roll_up_plan": "the roll-up walks events_feed in order, whatever the estimates",
    "claim_plan_reset": "the end of claim_plan",
    "claim_plan_generic": "claim_plan with the plans first made kept: no planning at each claim",
    "lock_limits": "claims under one limit take turns (SQLite has one writer anyway)",
    "limit_locks": "the limits a claim's candidates are under, which it then locks",
    "claim_plan_no_jit": "a claim under limits is not compiled for its disabled sorts",
    "claim_plan_jit_reset": "the end of claim_plan_no_jit",
    "listen": "wake-ups through LISTEN",
    "database_time": "the server's clock (SQLite's is this machine's)",
    "enqueue_one": "one statement, one round trip (SQLite enqueues in-process)",
    "machine_advance": "a machine's accepted event in one statement (data-modifying CTEs)",
    "machine_advance_untimed": "machine_advance when no timer is dropped or armed",
}
COLUMNS_ONLY_ON = {
    ("postgresql", "events", "tx"): "the transaction that wrote an event: the feed's order",
}


def test_both_backends_define_the_same_query_names() -> None:
    sqlite_names = set(SQLITE_QUERIES) - set(SQLITE_ONLY)
    postgres_names = set(POSTGRES_QUERIES) - set(POSTGRES_ONLY)
    assert sqlite_names == postgres_names
    assert set(SQLITE_ONLY) <= set(SQLITE_QUERIES)
    assert set(POSTGRES_ONLY) <= set(POSTGRES_QUERIES)


@pytest.fixture
def schema() -> Iterator[str]:
    _postgres_or_skip()
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _sqlite_columns(path: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        tables = [
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not row[0].startswith("sqlite_")
        ]
        columns = {
            (table, row[1])
            for table in tables
            for row in conn.execute(f"PRAGMA table_info({table})")
        }
    conn.close()
    return columns


def _postgres_columns(schema: str) -> set[tuple[str, str]]:
    with psycopg.connect(POSTGRES) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = %s",
            (schema,),
        ).fetchall()
    return {(table, column) for table, column in rows}


def test_both_backends_end_with_the_same_columns(tmp_path: Path, schema: str) -> None:
    path = tmp_path / "jobs.db"
    for url in (f"sqlite:///{path}", f"{POSTGRES}?schema={schema}"):
        open_store(url).close()
    sqlite_columns = _sqlite_columns(path)
    postgres_columns = _postgres_columns(schema)
    only = {
        backend: {(table, column) for (b, table, column) in COLUMNS_ONLY_ON if b == backend}
        for backend in ("sqlite", "postgresql")
    }
    assert sqlite_columns - only["sqlite"] == postgres_columns - only["postgresql"]
    assert only["postgresql"] <= postgres_columns
