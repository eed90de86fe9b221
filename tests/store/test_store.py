"""The store contract, run on every backend."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator

import pytest

from instar.engine import Returned, outcome_moves, plan_move
from instar.errors import ConfigurationError
from instar.lifecycle import State
from instar.models import BulkRecord, Job
from instar.payload import DEFAULT_MAX_BYTES
from instar.retry import Retry
from instar.store import open_store
from instar.store.contract import (
    ClaimRequest,
    Held,
    JobFilter,
    NewJob,
    Recheck,
    Request,
    Store,
    Term,
    Transaction,
)
from instar.vocabulary import Trigger
from instar.worker.heartbeat import RENEWAL
from tests.conftest import execute_raw, transaction_held_open

NOW = 1_800_000_000.0


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    opened = open_store(database)
    yield opened
    opened.close()


def new_job(
    name: str = "job",
    *,
    queue: str = "default",
    priority: int = 0,
    key: str | None = None,
    lease: float = 30.0,
) -> NewJob:
    return NewJob(
        name=name,
        queue=queue,
        state=State.READY,
        priority=priority,
        max_attempts=3,
        args={},
        args_json="{}",
        key=key,
        run_at=None,
        lease_seconds=lease,
    )


def insert(store: Store, jobs: list[NewJob], now: float = NOW) -> list[Job]:
    with store.transaction(now) as tx:
        return tx.insert_jobs(jobs, None)


def claim(
    store: Store, worker: str = "w", limit: int = 10, queues: list[str] | None = None
) -> list[int]:
    with store.transaction(NOW) as tx:
        return [j.id for j in tx.claim(ClaimRequest(worker, limit, queues))]


def heartbeat(store: Store, worker: str, job_ids: list[int], now: float) -> list[Held]:
    with store.transaction(now) as tx:
        return tx.heartbeat(worker, job_ids, RENEWAL)


def lease_left(store: Store, job_id: int, now: float) -> float:
    job = store.get_job(job_id)
    assert job is not None and job.lease_expires_at is not None
    return job.lease_expires_at.timestamp() - now


def request_cancel(store: Store, job_id: int) -> bool:
    with store.transaction(NOW) as tx:
        return tx.raise_request(job_id, Request.CANCEL, "cli")


def try_lead(store: Store, holder: str, now: float) -> bool:
    return store.try_lead(Term("maintenance", holder, ttl=5), now)


def test_migrating_again_changes_nothing(store: Store) -> None:
    version = store.migrate()
    assert store.migrate() == version
    assert version >= 1


def test_claim_takes_the_most_urgent_then_the_oldest(store: Store) -> None:
    low, high, low2, high2 = insert(
        store, [new_job(), new_job(priority=5), new_job(), new_job(priority=5)]
    )
    assert claim(store, limit=3) == [high.id, high2.id, low.id]
    assert claim(store) == [low2.id]
    assert claim(store) == []


def test_claim_gives_each_job_a_fresh_lease_and_counts_the_attempt(store: Store) -> None:
    [job] = insert(store, [new_job()])
    with store.transaction(NOW) as tx:
        [claimed] = tx.claim(ClaimRequest("w1", 1, None))
    assert (claimed.state, claimed.attempt, claimed.worker) == (State.RUNNING, 1, "w1")
    assert claimed.lease_token
    assert claimed.lease_expires_at is not None
    assert claimed.lease_expires_at.timestamp() == pytest.approx(NOW + 30)
    events = store.events(job.id)
    assert [(e.from_state, e.to_state, e.trigger, e.worker) for e in events] == [
        (None, State.READY, "enqueued", None),
        (State.READY, State.RUNNING, "claimed", "w1"),
    ]


def test_claim_reads_only_the_queues_asked_for(store: Store) -> None:
    mail, image = insert(store, [new_job(queue="mail"), new_job(queue="images")])
    assert claim(store, queues=["images", "video"]) == [image.id]
    assert claim(store, queues=["mail"]) == [mail.id]


def test_claimers_racing_never_share_a_job(database: str) -> None:
    stores = [open_store(database) for _ in range(4)]
    insert(stores[0], [new_job() for _ in range(400)])
    taken: list[list[int]] = [[] for _ in stores]

    def drain(i: int) -> None:
        while got := claim(stores[i], worker=f"w{i}", limit=7):
            taken[i].extend(got)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [job_id for share in taken for job_id in share]
    assert sorted(everything) == list(range(1, 401))
    for s in stores:
        s.close()


def test_a_claim_alone_takes_jobs_in_order_with_their_events_and_rechecks_the_rest(
    store: Store,
) -> None:
    low, high, last = insert(store, [new_job(), new_job(priority=5), new_job()])
    claimed, rechecked = store.claim_alone(ClaimRequest("w1", 2, None), [], NOW)
    assert [j.id for j in claimed] == [high.id, low.id]
    assert all((j.state, j.worker, j.attempt) == (State.RUNNING, "w1", 1) for j in claimed)
    assert all(j.lease_token for j in claimed)
    assert len({j.lease_token for j in claimed}) == 2, "each job its own token"
    assert rechecked == []
    claims = [store.events(job.id)[-1] for job in (high, low)]
    assert [(e.from_state, e.to_state, e.trigger, e.worker) for e in claims] == [
        (State.READY, State.RUNNING, "claimed", "w1"),
    ] * 2
    assert claims[0].id < claims[1].id  # the events in the order the claim took the jobs

    # The jobs it claimed, rechecked with the next claim: the one cancelled since says so.
    assert request_cancel(store, low.id)
    claimed, rechecked = store.claim_alone(ClaimRequest("w1", 5, None), [high.id, low.id], NOW)
    assert [j.id for j in claimed] == [last.id]
    assert rechecked == [Recheck(low.id, True, True, False, False)]
    claimed, rechecked = store.claim_alone(ClaimRequest("w1", 5, None), [], NOW)
    assert (claimed, rechecked) == ([], [])


def test_claims_alone_racing_on_one_store_never_share_a_job(database: str) -> None:
    store = open_store(database)
    insert(store, [new_job() for _ in range(300)])
    taken: list[list[int]] = [[] for _ in range(4)]

    def drain(i: int) -> None:
        while got := store.claim_alone(ClaimRequest(f"w{i}", 7, None), [], NOW)[0]:
            taken[i].extend(job.id for job in got)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(taken))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(job_id for share in taken for job_id in share) == list(range(1, 301))
    store.close()


@pytest.mark.parametrize("count", [1, 64, 150])
def test_a_batch_of_reports_writes_each_job_its_own_result_and_events_in_order(
    store: Store, count: int
) -> None:
    # SQLite stages many moves a statement: 150 is 64 + 64 + 16 + 4 + 2.
    jobs = insert(store, [new_job() for _ in range(count)])
    with store.transaction(NOW) as tx:
        claimed = tx.claim(ClaimRequest("w", count, None))
    moves = [
        move
        for n, job in enumerate(claimed)
        for move in outcome_moves(
            job, Returned(n), retry=Retry(), now=NOW, max_payload_bytes=DEFAULT_MAX_BYTES
        )
    ]
    with store.transaction(NOW + 1) as tx:
        assert tx.apply_moves(moves).won == [True] * count
    assert sorted(j.id for j in claimed) == [j.id for j in jobs]
    ended = [store.get_job(j.id) for j in claimed]
    assert [(j.state, j.result) for j in ended if j is not None] == [
        (State.COMPLETED, n) for n in range(count)
    ]
    last = [store.events(j.id)[-1] for j in claimed]
    assert [(e.to_state, e.worker) for e in last] == [(State.COMPLETED, "w")] * count
    assert [e.id for e in last] == sorted(e.id for e in last)  # in the moves' order


def test_a_key_is_inserted_once_even_within_one_batch(store: Store) -> None:
    first, second = insert(store, [new_job(key="k"), new_job(key="k")])
    assert first.id == second.id
    assert len(store.list_jobs(JobFilter())) == 1
    assert len(store.events(first.id)) == 1


def test_bulk_insert_returns_jobs_with_their_real_ids(store: Store) -> None:
    insert(store, [new_job("a")])
    jobs = insert(store, [new_job(f"b{i}") for i in range(100)])
    for job in jobs:
        stored = store.get_job(job.id)
        assert stored is not None and stored.name == job.name


def test_a_batch_of_200_varied_jobs_stores_every_column_as_one_job_at_a_time_does(
    store: Store, database: str
) -> None:
    """A large batch takes another way into the database (COPY on PostgreSQL):
    each job and its first event must come out as they do from a batch of one."""
    [parent] = insert(store, [new_job("parent")])

    def varied(n: int) -> NewJob:
        return NewJob(
            name=f"job-{n % 3}",
            queue=("default", "emails", "é ünïcode")[n % 3],
            state=(State.READY, State.SCHEDULED, State.PENDING)[n % 3],
            priority=(n % 5) - 2,
            max_attempts=1 + n % 4,
            args={"n": n},
            args_json=f'{{"n": {n}, "text": "\\u00e9 {n}"}}',
            key=None,
            run_at=NOW + n if n % 3 == 1 else None,
            lease_seconds=30 + n % 2,  # an int where a float is stored
            pause_timeout=3600.5 if n % 2 else 86400.0,
            parent_id=parent.id if n % 4 == 0 else None,
            limit_key=f"user:{n % 7}" if n % 2 else None,
            rate_key="api" if n % 5 == 0 else None,
            trace_context="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01" if n % 6 == 0 else None,
        )

    batch = insert(store, [varied(n) for n in range(200)])
    alone = [insert(store, [varied(n)])[0] for n in range(200)]

    # Every column of each job's row but its id, and of its events.
    rows = {row[0]: row[1:] for row in execute_raw(database, "SELECT * FROM jobs", ())}
    events: dict[int, list[tuple[object, ...]]] = {}
    for job_id, *event in execute_raw(
        database,
        "SELECT job_id, at, from_state, to_state, trigger, attempt, worker, actor, detail "
        "FROM events ORDER BY id",
        (),
    ):
        events.setdefault(job_id, []).append(tuple(event))

    def stored(job: Job) -> tuple[object, ...]:
        return (rows[job.id], events[job.id])

    assert [j.id for j in batch] == sorted(j.id for j in batch), "ids in the caller's order"
    assert [stored(j) for j in batch] == [stored(j) for j in alone]
    assert [j.args for j in batch] == [{"n": n} for n in range(200)]


def test_a_heartbeat_extends_only_its_own_workers_leases(store: Store) -> None:
    insert(store, [new_job(), new_job()])
    [mine] = claim(store, worker="me", limit=1)
    [theirs] = claim(store, worker="them", limit=1)
    held = heartbeat(store, "me", [mine, theirs], NOW + 10)
    assert [(h.job_id, h.cancel_requested) for h in held] == [(mine, False)]
    mine_job, their_job = store.get_job(mine), store.get_job(theirs)
    assert mine_job is not None and their_job is not None
    assert mine_job.lease_expires_at is not None and their_job.lease_expires_at is not None
    assert mine_job.lease_expires_at.timestamp() == pytest.approx(NOW + 40)
    assert their_job.lease_expires_at.timestamp() == pytest.approx(NOW + 30)


def test_a_heartbeat_extends_only_the_jobs_its_worker_still_tracks(store: Store) -> None:
    insert(store, [new_job(), new_job()])
    tracked, forgotten = claim(store, worker="me", limit=2)
    held = heartbeat(store, "me", [tracked], NOW + 10)
    assert [h.job_id for h in held] == [tracked]
    lost = store.get_job(forgotten)
    assert lost is not None and lost.lease_expires_at is not None
    assert lost.lease_expires_at.timestamp() == pytest.approx(NOW + 30)


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_heartbeat_passes_over_a_job_another_transaction_has_locked(
    store: Store, database: str
) -> None:
    """It never waits on a row lock: its worker's own report of a job locks that
    job's row, and the two waiting on each other would deadlock (detected only
    after a second, longer than a short lease). The job skipped is the report's."""
    insert(store, [new_job(), new_job()])
    reporting, running = claim(store, worker="me", limit=2)
    other = open_store(database)
    try:
        # Its worker's report in progress, holding the row's lock until it commits
        # (here a beat that renews its lease, 20 s of 30 left, locks it).
        def lock(tx: Transaction) -> None:
            tx.heartbeat("me", [reporting], RENEWAL)

        with transaction_held_open(other, NOW + 10, lock):
            heard: list[list[Held]] = []
            beat = threading.Thread(
                target=lambda: heard.append(heartbeat(store, "me", [reporting, running], NOW + 20))
            )
            beat.start()
            beat.join(10)
            assert not beat.is_alive(), "the heartbeat waited on the locked row"
    finally:
        other.close()
    extended, skipped = store.get_job(running), store.get_job(reporting)
    assert extended is not None and extended.lease_expires_at is not None
    assert skipped is not None and skipped.lease_expires_at is not None
    assert extended.lease_expires_at.timestamp() == pytest.approx(NOW + 50)
    assert skipped.lease_expires_at.timestamp() == pytest.approx(NOW + 40)
    assert sorted(h.job_id for h in heard[0]) == sorted([reporting, running]), "both heard"


def test_a_heartbeat_renews_only_the_leases_with_under_three_quarters_or_3_s_left(
    store: Store,
) -> None:
    """A lease with time to spare is not written at every beat (on PostgreSQL
    each write is a new row version); every job held is still heard from."""
    insert(store, [new_job(lease=30.0), new_job(lease=5.0), new_job(lease=1.5)])
    long, short, shortest = claim(store, worker="me", limit=3)
    beat = heartbeat(store, "me", [long, short, shortest], NOW + 1)
    assert sorted(h.job_id for h in beat) == [long, short, shortest]
    assert lease_left(store, long, NOW + 1) == pytest.approx(29), "29 of 30 s left: kept"
    assert lease_left(store, short, NOW + 1) == pytest.approx(4), "4 of 5 s left: kept"
    assert lease_left(store, shortest, NOW + 1) == pytest.approx(1.5), "under 3 s: renewed"

    heartbeat(store, "me", [long, short, shortest], NOW + 2.5)
    assert lease_left(store, short, NOW + 2.5) == pytest.approx(5), "2.5 s left: renewed"
    assert lease_left(store, long, NOW + 2.5) == pytest.approx(27.5)

    heartbeat(store, "me", [long, short, shortest], NOW + 7.4)
    assert lease_left(store, long, NOW + 7.4) == pytest.approx(22.6), "over 3/4 left: kept"
    heartbeat(store, "me", [long, short, shortest], NOW + 7.6)
    assert lease_left(store, long, NOW + 7.6) == pytest.approx(30), "under 3/4: renewed"


def test_a_move_that_keeps_the_lease_never_shortens_it(store: Store) -> None:
    """A service's ready, planned from the job as claimed, after a beat renewed
    its lease: the renewed lease stays (the claim's would run out in a second)."""
    insert(store, [new_job(lease=10.0)])
    with store.transaction(NOW) as tx:
        [claimed] = tx.claim(ClaimRequest("w", 1, None))
    heartbeat(store, "w", [claimed.id], NOW + 8)  # 2 s left: renewed to NOW + 18
    ready = plan_move(claimed, State.SERVING, Trigger.SERVING, by_lease=True)
    with store.transaction(NOW + 9) as tx:
        assert tx.apply_moves([ready]).won == [True]
    assert lease_left(store, claimed.id, NOW + 9) == pytest.approx(9)


def test_a_cancel_request_reaches_the_worker_through_its_heartbeat(store: Store) -> None:
    insert(store, [new_job()])
    [job_id] = claim(store, worker="me")
    assert request_cancel(store, job_id)
    assert not request_cancel(store, job_id), "asked once is enough"
    [held] = heartbeat(store, "me", [job_id], NOW)
    assert (held.job_id, held.cancel_requested) == (job_id, True)


def test_only_one_holder_leads_a_role_until_it_expires(store: Store) -> None:
    assert try_lead(store, "a", NOW)
    assert not try_lead(store, "b", NOW + 1)
    assert try_lead(store, "a", NOW + 2), "the holder renews"
    assert try_lead(store, "b", NOW + 8), "an expired role is free"


def test_next_timer_at_is_the_earliest_start_still_ahead(store: Store) -> None:
    scheduled = [
        NewJob("s", "default", State.SCHEDULED, 0, 3, {}, "{}", None, NOW + t, 30.0)
        for t in (90, 60)
    ]
    assert store.next_timer_at() is None
    insert(store, scheduled)
    assert store.next_timer_at() == pytest.approx(NOW + 60)
    assert store.due_timers(NOW + 59, 10) == []
    assert [j.name for j in store.due_timers(NOW + 60, 10)] == ["s"]


def test_a_read_only_store_creates_nothing_and_needs_a_migrated_schema(database: str) -> None:
    if database.startswith("sqlite:///"):
        path = database.removeprefix("sqlite:///")
        with pytest.raises(ConfigurationError, match="no database at"):
            open_store(database, read_only=True)
        assert not os.path.exists(path), "opening to read created the file"
        sqlite3.connect(path).close()  # an empty file, not an Instar database
    with pytest.raises(ConfigurationError, match="has no Instar schema"):
        open_store(database, read_only=True)
    open_store(database).close()
    reader = open_store(database, read_only=True)
    try:
        assert reader.list_jobs(JobFilter()) == []
        with pytest.raises(Exception, match=r"read.?only"):
            insert(reader, [new_job()])
    finally:
        reader.close()


def _bulk(bulk_id: str, owner: str, at: float) -> BulkRecord:
    return BulkRecord(bulk_id, '{"verb": "cancel"}', "{}", False, owner, at, at)


def test_a_bulk_operation_is_saved_only_by_its_owner_and_taken_over_once_quiet(
    store: Store,
) -> None:
    store.add_bulk(_bulk("op1", "server-a", 1_000.0), forget_before=0.0)
    assert store.save_bulk("op1", "server-a", '{"applied": 200}', False, 1_010.0)
    assert not store.save_bulk("op1", "server-b", '{"applied": 1}', False, 1_010.0)
    assert store.take_bulks("server-b", 1_020.0, quiet_since=1_000.0) == []  # not quiet yet
    [taken] = store.take_bulks("server-b", 1_100.0, quiet_since=1_040.0)
    assert (taken.id, taken.owner, taken.progress) == ("op1", "server-b", '{"applied": 200}')
    assert store.take_bulks("server-c", 1_100.0, quiet_since=1_040.0) == []  # taken once
    assert not store.save_bulk("op1", "server-a", "{}", False, 1_101.0)  # no longer its own
    assert store.save_bulk("op1", "server-b", '{"applied": 400}', True, 1_102.0)
    finished = store.bulk("op1")
    assert finished is not None and finished.done and finished.progress == '{"applied": 400}'
    assert not store.save_bulk("op1", "server-b", "{}", False, 1_103.0)  # done stays done
    assert store.take_bulks("server-c", 9_999.0, quiet_since=9_000.0) == []


def test_adding_a_bulk_operation_forgets_finished_ones_asked_for_long_ago(store: Store) -> None:
    store.add_bulk(_bulk("old-done", "s", 100.0), forget_before=0.0)
    store.save_bulk("old-done", "s", "{}", True, 101.0)
    store.add_bulk(_bulk("old-running", "s", 100.0), forget_before=0.0)
    store.add_bulk(_bulk("new", "s", 5_000.0), forget_before=1_000.0)
    assert store.bulk("old-done") is None
    assert store.bulk("old-running") is not None and store.bulk("new") is not None
