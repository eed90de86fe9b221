"""Fixtures: a fresh database per test, a worker running beside the test."""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

import instar
from instar.clock import FrozenClock
from instar.store.contract import Store, Transaction
from instar.worker.loop import Worker

# The backends the store and engine suites run on.
BACKENDS = ["sqlite", "postgresql"]
POSTGRES = os.environ.get("INSTAR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns the marks into groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`make test` runs the suite in two processes (pytest-xdist, ``--dist
    loadgroup``), and every test that reaches the PostgreSQL server in the same
    one. The server's snapshot horizon is shared by all its databases and
    schemas, and the feed returns an event only once no older transaction is
    still open: side by side, one test's open transaction (its migrations, a
    worker's batch) would hold back the events another test reads at once."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("database") if callspec is not None else None
        module = getattr(item, "module", None)
        if backend == "postgresql" or (backend is None and hasattr(module, "psycopg")):
            item.add_marker(pytest.mark.xdist_group("postgresql"))


def _postgres_or_skip() -> None:
    """A missing server skips PostgreSQL tests on a laptop and fails them in CI."""
    try:
        psycopg.connect(POSTGRES, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        if os.environ.get("INSTAR_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL at {POSTGRES} is required (INSTAR_REQUIRE_POSTGRES=1): {exc}")
        pytest.skip(f"no PostgreSQL at {POSTGRES}: {exc}")


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL of each backend, empty and private to the test: a file for
    SQLite, a schema of its own for PostgreSQL (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    _postgres_or_skip()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in POSTGRES else "?"
    yield f"{POSTGRES}{separator}schema={schema}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def execute_raw(database: str, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
    """Test-only SQL straight to a backend (``?`` placeholders), past the engine;
    the rows it returns, if any."""
    if database.startswith("sqlite:///"):
        with sqlite3.connect(database.removeprefix("sqlite:///")) as conn:
            rows = conn.execute(sql, params).fetchall()
        conn.close()
        return rows
    schema = database.rsplit("schema=", 1)[1]
    with psycopg.connect(POSTGRES, autocommit=True) as pg:
        pg.execute(f"SET search_path TO {schema}")
        cursor = pg.execute(sql.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description is not None else []


@pytest.fixture
def app(database: str) -> Iterator[instar.App]:
    with instar.App(database) as application:
        yield application


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def frozen_app(database: str, clock: FrozenClock) -> Iterator[instar.App]:
    """An app whose time moves only when the test advances ``clock``."""
    with instar.App(database, clock=clock) as application:
        yield application


@contextmanager
def running_worker(app: instar.App, **settings: Any) -> Iterator[Worker]:
    """Run a worker in a background thread for the duration of the block."""
    settings.setdefault("concurrency", 4)
    worker = app.worker(**settings)
    errors: list[BaseException] = []

    def target() -> None:
        import asyncio

        try:
            asyncio.run(worker.run())
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "worker did not stop"
        if errors:
            raise errors[0]


@contextmanager
def transaction_held_open(
    store: Store, now: float, write: Callable[[Transaction], object]
) -> Iterator[None]:
    """``write(tx)`` in a transaction of ``store`` on another thread, held open
    (10 s at most) until the block ends, then committed."""
    opened, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.transaction(now) as tx:
            write(tx)
            opened.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert opened.wait(10), "the transaction did not open"
        yield
    finally:
        release.set()
        thread.join(10)
