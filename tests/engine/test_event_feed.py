"""The event feed: every event once, in commit order, resumable from any id."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

import instar
from instar.engine.reads import Reader
from instar.lifecycle import State
from instar.store import open_store
from instar.store.contract import EventFilter, Wake
from tests.conftest import POSTGRES, _postgres_or_skip, running_worker, transaction_held_open


def _noop(app: instar.App) -> instar.app.BoundJob:
    @app.job(name="noop")
    def noop(n: int = 0) -> int:
        return n

    return noop


def test_the_feed_holds_every_event_of_every_job_in_order(app: instar.App) -> None:
    noop = _noop(app)
    jobs = [noop.enqueue(n=n) for n in range(3)]
    app.run_worker(burst=True)
    feed = list(app.events())
    timelines = [e for job in jobs for e in app.history(job.id)]
    assert sorted(e.id for e in feed) == sorted(e.id for e in timelines)
    assert [e.id for e in feed] == sorted(e.id for e in feed)
    assert {e.to_state for e in feed} == {State.READY, State.RUNNING, State.COMPLETED}


def test_reading_again_from_the_last_id_never_misses_nor_repeats(app: instar.App) -> None:
    noop = _noop(app)
    for n in range(5):
        noop.enqueue(n=n)
    first = list(app.events())
    app.run_worker(burst=True)
    second = list(app.events(after=first[-1].id))
    everything = list(app.events())
    assert [e.id for e in first + second] == [e.id for e in everything]
    assert list(app.events(after=everything[-1].id)) == []


def test_the_feed_filters_by_job_queue_name_and_state(app: instar.App) -> None:
    noop = _noop(app)

    @app.job(name="other", queue="elsewhere")
    def other() -> None:
        return None

    mine = noop.enqueue()
    theirs = other.enqueue()
    app.run_worker(burst=True)
    assert {e.job_id for e in app.events(job=mine.id)} == {mine.id}
    assert {e.job_id for e in app.events(queue="elsewhere")} == {theirs.id}
    assert {e.job_id for e in app.events(name="noop")} == {mine.id}
    completed = list(app.events(state="completed"))
    assert sorted(e.job_id for e in completed) == sorted([mine.id, theirs.id])
    assert all(e.to_state is State.COMPLETED for e in completed)
    with pytest.raises(instar.InvalidOption, match="unknown state"):
        list(app.events(state="finished"))


def test_following_the_feed_delivers_events_as_they_commit(app: instar.App) -> None:
    noop = _noop(app)
    start = app.last_event_id()
    got: list[instar.Event] = []

    def follow() -> None:
        for event in app.events(after=start, follow=True, timeout=10):
            got.append(event)
            if event.to_state is State.COMPLETED:
                return

    reader = threading.Thread(target=follow)
    reader.start()
    time.sleep(0.1)
    job = noop.enqueue(n=1)
    with running_worker(app):
        reader.join(timeout=10)
    assert not reader.is_alive()
    assert [(e.job_id, e.to_state) for e in got] == [
        (job.id, State.READY),
        (job.id, State.RUNNING),
        (job.id, State.COMPLETED),
    ]


def test_following_stops_at_its_timeout(app: instar.App) -> None:
    began = time.monotonic()
    assert list(app.events(after=app.last_event_id(), follow=True, timeout=0.3)) == []
    assert time.monotonic() - began >= 0.3


def test_the_feed_is_async_too(app: instar.App) -> None:
    noop = _noop(app)
    job = noop.enqueue()

    async def read() -> list[instar.Event]:
        return [e async for e in app.events_async(job=job.id)]

    assert [e.to_state for e in asyncio.run(read())] == [State.READY]

    async def follow() -> list[State]:
        seen: list[State] = []
        async for event in app.events_async(job=job.id, follow=True, timeout=10):
            seen.append(event.to_state)
            if event.to_state is State.COMPLETED:
                break
        return seen

    with running_worker(app):
        states = asyncio.run(follow())
    assert states == [State.READY, State.RUNNING, State.COMPLETED]


def test_wait_is_woken_by_the_feed_instead_of_polling_the_job(
    app: instar.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.job(name="slow")
    def slow() -> str:
        time.sleep(0.5)
        return "done"

    job = slow.enqueue()
    reads: list[int] = []
    real_get = Reader.get

    def counted_get(reader: Reader, job_id: int) -> instar.Job:
        reads.append(job_id)
        return real_get(reader, job_id)

    monkeypatch.setattr(Reader, "get", counted_get)
    with running_worker(app):
        done = app.wait(job.id, timeout=10)
    assert done.result == "done"
    # One read before waiting, one after the completion event; a poller reads the
    # job every few milliseconds for half a second.
    assert len([r for r in reads if r == job.id]) <= 4, reads


@pytest.fixture
def schemas() -> Iterator[tuple[str, str]]:
    _postgres_or_skip()
    names = (f"t_{uuid.uuid4().hex[:12]}", f"t_{uuid.uuid4().hex[:12]}")
    yield names
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        for name in names:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def test_postgresql_wakes_only_the_listeners_of_the_schema_that_changed(
    schemas: tuple[str, str],
) -> None:
    mine, theirs = (instar.App(f"{POSTGRES}?schema={name}") for name in schemas)
    with mine, theirs:
        for application in (mine, theirs):
            _noop(application)
        heard: list[Wake] = []
        mine.engine.store.watch(heard.append)
        theirs.enqueue("noop")
        time.sleep(0.5)
        assert heard == [], "a commit in another schema woke this one's listeners"
        mine.enqueue("noop")
        deadline = time.monotonic() + 5
        while not heard and time.monotonic() < deadline:
            time.sleep(0.01)
        assert heard == [Wake.READY]


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_follower_gets_events_an_older_transaction_held_back_until_just_after_a_read(
    app: instar.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The older transaction writes no event (as a heartbeat's), so its commit
    wakes no follower: the follower must know to read again by itself."""
    noop = _noop(app)
    start = app.last_event_id()
    older = psycopg.connect(POSTGRES)
    older.execute("SELECT pg_current_xact_id()")  # open, with a transaction id
    job = noop.enqueue(n=1)  # its event commits behind the older transaction
    read = app.engine.read.events_since

    def read_then_end_the_older(after: int, limit: int, where: EventFilter) -> list[instar.Event]:
        page = read(after, limit, where)
        if not older.closed:
            older.commit()
            older.close()
        return page

    monkeypatch.setattr(app.engine.read, "events_since", read_then_end_the_older)
    got = []
    for event in app.events(after=start, follow=True, timeout=5):
        got.append(event)
        break
    assert [(e.job_id, e.to_state) for e in got] == [(job.id, State.READY)]


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_an_event_committed_behind_an_older_open_transaction_waits_for_it(
    app: instar.App,
) -> None:
    """PostgreSQL hands out event ids when a transaction writes, not when it
    commits: an older transaction may commit a smaller id after a younger one
    committed a larger. The feed must neither skip the older one's events (had it
    moved past the larger id) nor deliver anything twice."""
    noop = _noop(app)
    noop.enqueue(n=0)
    cursor = list(app.events())[-1].id
    store = open_store(app.database)
    older = instar.registry.new_jobs(
        app.definition("noop"), [{"n": 1}], instar.registry.Placement(), max_payload_bytes=1 << 20
    )
    try:
        with transaction_held_open(
            store, app.clock.now(), lambda tx: tx.insert_jobs(older, "older")
        ):
            younger = noop.enqueue(n=2)  # commits while the older transaction is open
            held = list(app.events(after=cursor))
            assert held == [], "an event was returned ahead of an older open transaction"
            assert app.engine.store.held_back_events()
    finally:
        store.close()
    after = list(app.events(after=cursor))
    assert [e.actor for e in after] == ["older", "app"]
    assert after[-1].job_id == younger.id
    assert list(app.events(after=after[-1].id)) == []
    assert not app.engine.store.held_back_events()
