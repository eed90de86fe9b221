"""Flow control in the claim: concurrency limits per queue and per key, rates,
and the bad declarations refused before anything runs. Worker processes
sharing limits are in ``tests/worker/test_flow_processes.py``."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

import instar
from instar.clock import FrozenClock
from instar.engine import Returned, outcome_moves
from instar.errors import ConfigurationError, PayloadError
from instar.store.contract import ClaimRequest, RateHold


def _claim(app: instar.App, worker: str, limit: int = 10) -> list[instar.Job]:
    request = ClaimRequest(
        worker, limit, None, names=list(app.registry), limits=app.registry.flow_limits()
    )
    return app.engine.exchange([], [], request).claimed


def _complete(app: instar.App, job: instar.Job) -> None:
    now = app.clock.now()
    moves = outcome_moves(
        job, Returned(None), retry=instar.Retry(), now=now, max_payload_bytes=1024
    )
    assert app.engine.exchange(moves, [], None).applied == [True]


@pytest.fixture
def limited(database: str) -> instar.App:
    app = instar.App(database, clock=FrozenClock())
    app.queue("mail", concurrency=2)

    @app.job(name="sync_user", concurrency=instar.Limit(key="user:{user}", max=1))
    def sync_user(user: int) -> None:
        return None

    @app.job(name="send", queue="mail")
    def send(to: str) -> None:
        return None

    @app.job(name="free")
    def free() -> None:
        return None

    @app.job(name="paced", rate=instar.Rate(2, per=10))
    def paced() -> None:
        return None

    return app


def test_a_job_held_back_by_its_key_stays_ready_and_is_claimed_when_the_slot_frees(
    limited: instar.App,
) -> None:
    with limited as app:
        first = app.enqueue("sync_user", {"user": 7})
        second = app.enqueue("sync_user", {"user": 7})
        other = app.enqueue("sync_user", {"user": 8})
        claimed = _claim(app, "w1")
        assert sorted(j.id for j in claimed) == [first.id, other.id]
        assert _claim(app, "w2") == []
        assert app.get(second.id).state is instar.State.READY
        _complete(app, claimed[0])
        assert [j.id for j in _claim(app, "w2")] == [second.id]


def test_jobs_enqueued_together_keep_their_own_keys_and_their_order(
    limited: instar.App,
) -> None:
    with limited as app:
        jobs = app.enqueue_many("sync_user", [{"user": 7}, {"user": 8}, {"user": 7}])
        assert [app.get(job.id).args for job in jobs] == [{"user": 7}, {"user": 8}, {"user": 7}]
        assert jobs[0].id < jobs[1].id < jobs[2].id
        claimed = _claim(app, "w1")
        assert sorted(j.id for j in claimed) == [jobs[0].id, jobs[1].id]
        assert [len(app.history(job.id)) for job in jobs] == [2, 2, 1]


def test_a_queue_limit_counts_the_jobs_of_every_worker_and_leaves_other_queues_alone(
    limited: instar.App,
) -> None:
    with limited as app:
        mails = [app.enqueue("send", {"to": f"{n}@example.com"}) for n in range(4)]
        unlimited = [app.enqueue("free") for _ in range(3)]
        first = _claim(app, "w1", limit=1)
        assert [j.id for j in first] == [mails[0].id]
        second = _claim(app, "w2")
        assert sorted(j.id for j in second) == sorted([mails[1].id, *(j.id for j in unlimited)])
        assert _claim(app, "w3") == []
        _complete(app, first[0])
        assert [j.id for j in _claim(app, "w3")] == [mails[2].id]


def test_a_rate_spaces_the_starts_evenly_however_many_claim(limited: instar.App) -> None:
    with limited as app:
        clock = app.clock
        assert isinstance(clock, FrozenClock)
        jobs = [app.enqueue("paced") for _ in range(4)]
        assert [j.id for j in _claim(app, "w1")] == [jobs[0].id]  # 2 per 10 s: one per 5 s
        assert _claim(app, "w2") == []
        clock.advance(4.9)
        assert _claim(app, "w2") == []
        clock.advance(0.2)
        assert [j.id for j in _claim(app, "w2")] == [jobs[1].id]
        clock.advance(60)  # no burst after a quiet minute: still one start per 5 s
        assert [j.id for j in _claim(app, "w1")] == [jobs[2].id]
        assert _claim(app, "w2") == []


def test_a_rate_that_reopened_after_a_claim_judged_it_says_so_until_the_next_claim(
    limited: instar.App,
) -> None:
    """A worker's claim may judge a rate a moment before it reopens: asked
    afterwards, the rate has no next start left, and only ``came_due`` tells
    the idle worker to claim again rather than sleep the fallback poll."""
    with limited as app:
        clock = app.clock
        assert isinstance(clock, FrozenClock)
        for _ in range(3):
            app.enqueue("paced")
        _claim(app, "w1")
        judged = clock.now()
        assert _claim(app, "w2") == []  # closed for 5 s
        hold = app.engine.read.rate_hold(clock.now(), judged)
        assert hold.next_start == pytest.approx(judged + 5.0)
        assert not hold.came_due
        clock.advance(5.1)
        assert app.engine.read.rate_hold(clock.now(), judged) == RateHold(None, True)
        assert len(_claim(app, "w2")) == 1
        hold = app.engine.read.rate_hold(clock.now(), clock.now())
        assert hold.next_start == pytest.approx(clock.now() + 5.0)
        assert not hold.came_due
        clock.advance(60)  # long reopened before this claim was judged: nothing came due since
        assert app.engine.read.rate_hold(clock.now(), clock.now() - 1) == RateHold(None, False)


def test_instar_limits_show_each_declared_limit_with_what_runs_and_waits(
    limited: instar.App,
) -> None:
    with limited as app:
        for user in (1, 1, 2):
            app.enqueue("sync_user", {"user": user})
        app.engine.store.declare_flow_limits(
            app.registry.declared_limits(), list(app.registry), app.clock.now()
        )
        _claim(app, "w1")
        found = {(limit.kind, limit.name): limit for limit in app.limits()}
        assert set(found) == {("queue", "mail"), ("job", "sync_user"), ("job", "paced")}
        syncs = found[("job", "sync_user")]
        assert (syncs.concurrency, syncs.key, syncs.running, syncs.waiting) == (
            1,
            "user:{user}",
            2,
            1,
        )
        assert (found[("job", "paced")].rate_count, found[("job", "paced")].rate_per) == (2, 10.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (lambda: {"concurrency": 0}, "from 1 to"),
        (lambda: {"concurrency": instar.Limit(1, key="user:{user.id}")}, "plain argument name"),
        (lambda: {"concurrency": instar.Limit(1, key="user:{nobody}")}, "'nobody', which is not"),
        (lambda: {"rate": instar.Rate(0)}, "a rate's count"),
        (lambda: {"rate": instar.Rate(5, per=float("nan"))}, "a rate's period"),
        (lambda: {"rate": instar.Limit(5)}, "rate must be an instar.Rate, got Limit"),
        (lambda: {"rate": 5}, "rate must be an instar.Rate, got int"),
        (lambda: {"concurrency": "5"}, "concurrency must be an int or an instar.Limit"),
    ],
)
def test_a_bad_limit_fails_when_decorated(
    options: Callable[[], dict[str, object]], message: str
) -> None:
    app = instar.App(":memory:")
    with pytest.raises(ConfigurationError, match=message):

        @app.job(**options())  # type: ignore[call-overload, untyped-decorator]
        def sync(user: int) -> None:
            return None

    assert not app.registry


def test_a_queue_limit_with_a_key_or_declared_twice_is_refused() -> None:
    app = instar.App(":memory:")
    with pytest.raises(ConfigurationError, match="give a key on a job's limit"):
        app.queue("mail", concurrency=instar.Limit(1, key="to:{to}"))
    app.queue("mail", concurrency=3)
    with pytest.raises(ConfigurationError, match="declared already"):
        app.queue("mail", rate=instar.Rate(1))


def test_a_key_takes_an_arguments_default_and_a_missing_argument_is_refused(
    database: str,
) -> None:
    with instar.App(database) as app:

        @app.job(name="sync_user", concurrency=instar.Limit(key="user:{user}", max=1))
        def sync_user(user: int = 0) -> None:
            return None

        @app.job(name="sync_any", concurrency=instar.Limit(key="user:{user}", max=1))
        def sync_any(**fields: int) -> None:
            return None

        default = app.enqueue("sync_user")
        with pytest.raises(PayloadError, match="needs the argument 'user'"):
            app.enqueue("sync_any", {"other": 1})
        assert [j.id for j in app.jobs()] == [default.id]
        app.enqueue("sync_user", {"user": 0})
        assert [j.args for j in _claim(app, "w1")] == [{}]  # user 0 twice: one at a time


def _claim_at_once(
    app: instar.App, worker: str, barrier: threading.Barrier, taken: list[list[instar.Job]]
) -> None:
    barrier.wait()
    taken.append(_claim(app, worker))


def test_claims_racing_for_one_key_take_one_job_between_them(database: str) -> None:
    """Four claimers released at once, ten times over, on jobs of one key with
    room for one: each time exactly one job is taken."""
    apps = [instar.App(database) for _ in range(4)]
    try:
        for app in apps:

            @app.job(name="sync_user", concurrency=instar.Limit(key="user:{user}", max=1))
            def sync_user(user: int) -> None:
                return None

        first = apps[0]
        for round_ in range(10):
            for _ in range(4):
                first.enqueue("sync_user", {"user": round_})
            barrier = threading.Barrier(len(apps))
            taken: list[list[instar.Job]] = []
            threads = [
                threading.Thread(target=_claim_at_once, args=(app, f"w{n}", barrier, taken))
                for n, app in enumerate(apps)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sum(len(jobs) for jobs in taken) == 1
    finally:
        for app in apps:
            app.close()


def test_a_rate_forgotten_once_its_time_has_passed_holds_nothing_back(
    limited: instar.App,
) -> None:
    with limited as app:
        clock = app.clock
        assert isinstance(clock, FrozenClock)
        jobs = [app.enqueue("paced") for _ in range(2)]
        assert [j.id for j in _claim(app, "w1")] == [jobs[0].id]
        assert app.engine.store.forget_rates(clock.now(), 100) == 0  # still holding starts back
        clock.advance(5.5)
        assert app.engine.store.forget_rates(clock.now(), 100) == 1
        assert app.engine.read.rate_hold(clock.now(), 0.0) == RateHold(None, False)
        assert [j.id for j in _claim(app, "w1")] == [jobs[1].id]
        assert app.engine.read.rate_hold(clock.now(), 0.0).next_start is None  # nothing waits
        app.enqueue("paced")
        hold = app.engine.read.rate_hold(clock.now(), 0.0)
        assert hold.next_start == pytest.approx(clock.now() + 5.0)
        assert not hold.came_due


def test_jobs_enqueued_without_the_limit_count_under_their_name(database: str) -> None:
    with instar.App(database) as producer, instar.App(database) as worker:

        @producer.job(name="sync_user")
        def unlimited(user: int) -> None:
            return None

        @worker.job(name="sync_user", concurrency=instar.Limit(key="user:{user}", max=1))
        def limited(user: int) -> None:
            return None

        for user in (7, 7, 8):
            producer.enqueue("sync_user", {"user": user})
        assert len(_claim(worker, "w1")) == 1


def test_jobs_of_two_kinds_whose_keys_fill_alike_take_turns(database: str) -> None:
    with instar.App(database) as app:

        @app.job(name="charge", concurrency=instar.Limit(key="account:{account}", max=1))
        def charge(account: int) -> None:
            return None

        @app.job(name="refund", concurrency=instar.Limit(key="account:{id}", max=1))
        def refund(id: int) -> None:
            return None

        app.enqueue("charge", {"account": 3})
        app.enqueue("refund", {"id": 3})
        assert len(_claim(app, "w1")) == 1


def test_a_burst_worker_does_not_wait_for_a_rate_that_holds_nothing_back(
    database: str,
) -> None:
    with instar.App(database) as app:

        @app.job(name="hourly", rate=instar.Rate(1, per=3600))
        def hourly() -> None:
            return None

        job = app.enqueue("hourly")
        report = app.run_worker(burst=True)
        assert report.completed == 1
        assert app.get(job.id).state is instar.State.COMPLETED
