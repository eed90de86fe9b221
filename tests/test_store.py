"""The store contract, run on every backend."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from instar.lifecycle import State
from instar.store import open_store
from instar.store.contract import ClaimRequest, JobFilter, NewJob, Store

NOW = 1_800_000_000.0


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    opened = open_store(database)
    yield opened
    opened.close()


def new_job(
    name: str = "job", *, queue: str = "default", priority: int = 0, key: str | None = None
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
        lease_seconds=30.0,
    )


def claim(
    store: Store, worker: str = "w", limit: int = 10, queues: list[str] | None = None
) -> list[int]:
    return [
        j.id for j in store.commit_batch([], [], ClaimRequest(worker, limit, queues), NOW).claimed
    ]


def test_migrating_again_changes_nothing(store: Store) -> None:
    version = store.migrate()
    assert store.migrate() == version
    assert version >= 1


def test_claim_takes_the_most_urgent_then_the_oldest(store: Store) -> None:
    low, high, low2, high2 = store.insert_jobs(
        [new_job(), new_job(priority=5), new_job(), new_job(priority=5)], NOW, None
    )
    assert claim(store, limit=3) == [high.id, high2.id, low.id]
    assert claim(store) == [low2.id]
    assert claim(store) == []


def test_claim_gives_each_job_a_fresh_lease_and_counts_the_attempt(store: Store) -> None:
    [job] = store.insert_jobs([new_job()], NOW, None)
    [claimed] = store.commit_batch([], [], ClaimRequest("w1", 1, None), NOW).claimed
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
    mail, image = store.insert_jobs([new_job(queue="mail"), new_job(queue="images")], NOW, None)
    assert claim(store, queues=["images", "video"]) == [image.id]
    assert claim(store, queues=["mail"]) == [mail.id]


def test_claimers_racing_never_share_a_job(database: str) -> None:
    stores = [open_store(database) for _ in range(4)]
    stores[0].insert_jobs([new_job() for _ in range(400)], NOW, None)
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


def test_a_key_is_inserted_once_even_within_one_batch(store: Store) -> None:
    first, second = store.insert_jobs([new_job(key="k"), new_job(key="k")], NOW, None)
    assert first.id == second.id
    assert len(store.list_jobs(JobFilter())) == 1
    assert len(store.events(first.id)) == 1


def test_bulk_insert_returns_jobs_with_their_real_ids(store: Store) -> None:
    store.insert_jobs([new_job("a")], NOW, None)
    jobs = store.insert_jobs([new_job(f"b{i}") for i in range(100)], NOW, None)
    for job in jobs:
        stored = store.get_job(job.id)
        assert stored is not None and stored.name == job.name


def test_a_heartbeat_extends_only_its_own_workers_leases(store: Store) -> None:
    store.insert_jobs([new_job(), new_job()], NOW, None)
    [mine] = claim(store, worker="me", limit=1)
    [theirs] = claim(store, worker="them", limit=1)
    held = store.heartbeat("me", [mine, theirs], NOW + 10)
    assert [(h.job_id, h.cancel_requested) for h in held] == [(mine, False)]
    mine_job, their_job = store.get_job(mine), store.get_job(theirs)
    assert mine_job is not None and their_job is not None
    assert mine_job.lease_expires_at is not None and their_job.lease_expires_at is not None
    assert mine_job.lease_expires_at.timestamp() == pytest.approx(NOW + 40)
    assert their_job.lease_expires_at.timestamp() == pytest.approx(NOW + 30)


def test_a_heartbeat_extends_only_the_jobs_its_worker_still_tracks(store: Store) -> None:
    store.insert_jobs([new_job(), new_job()], NOW, None)
    tracked, forgotten = claim(store, worker="me", limit=2)
    held = store.heartbeat("me", [tracked], NOW + 10)
    assert [h.job_id for h in held] == [tracked]
    lost = store.get_job(forgotten)
    assert lost is not None and lost.lease_expires_at is not None
    assert lost.lease_expires_at.timestamp() == pytest.approx(NOW + 30)


def test_a_cancel_request_reaches_the_worker_through_its_heartbeat(store: Store) -> None:
    store.insert_jobs([new_job()], NOW, None)
    [job_id] = claim(store, worker="me")
    assert store.request_cancel_if_leased(job_id, NOW, "cli")
    assert not store.request_cancel_if_leased(job_id, NOW, "cli"), "asked once is enough"
    [held] = store.heartbeat("me", [job_id], NOW)
    assert (held.job_id, held.cancel_requested) == (job_id, True)


def test_only_one_holder_leads_a_role_until_it_expires(store: Store) -> None:
    assert store.try_lead("maintenance", "a", NOW, ttl=5)
    assert not store.try_lead("maintenance", "b", NOW + 1, ttl=5)
    assert store.try_lead("maintenance", "a", NOW + 2, ttl=5), "the holder renews"
    assert store.try_lead("maintenance", "b", NOW + 8, ttl=5), "an expired role is free"


def test_next_timer_at_is_the_earliest_start_still_ahead(store: Store) -> None:
    scheduled = [
        NewJob("s", "default", State.SCHEDULED, 0, 3, {}, "{}", None, NOW + t, 30.0)
        for t in (90, 60)
    ]
    assert store.next_timer_at() is None
    store.insert_jobs(scheduled, NOW, None)
    assert store.next_timer_at() == pytest.approx(NOW + 60)
    assert store.due_timers(NOW + 59, 10) == []
    assert [j.name for j in store.due_timers(NOW + 60, 10)] == ["s"]
