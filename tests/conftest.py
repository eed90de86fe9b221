"""Fixtures: a fresh database per test, a worker running beside the test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import instar
from instar.clock import FrozenClock
from instar.worker.loop import Worker

# The backends the store and engine suites run on; PostgreSQL joins this list.
BACKENDS = ["sqlite"]


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL of each backend, empty and private to the test."""
    assert request.param == "sqlite"
    return f"sqlite:///{tmp_path / 'jobs.db'}"


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
