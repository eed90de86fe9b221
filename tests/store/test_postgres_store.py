"""What only the PostgreSQL backend promises: transactional enqueue, schemas,
clear connection errors, and claims that read only the ready index."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import psycopg
import pytest

import instar
from instar.engine import ReportsPartlyWritten, Returned, outcome_moves
from instar.lifecycle import State
from instar.store.contract import Applied, ClaimRequest, Move, Wake
from instar.store.sql_store import SQLTransaction
from tests.conftest import POSTGRES, _postgres_or_skip


@pytest.fixture
def schema() -> Iterator[str]:
    _postgres_or_skip()
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def app(schema: str) -> Iterator[instar.App]:
    with instar.App(f"{POSTGRES}?schema={schema}") as application:

        @application.job(name="add")
        def add(a: int, b: int) -> int:
            return a + b

        application.migrate()
        yield application


def test_a_job_enqueued_in_a_rolled_back_transaction_never_exists(app: instar.App) -> None:
    with psycopg.connect(POSTGRES) as conn:
        job = app.enqueue("add", {"a": 1, "b": 2}, connection=conn)
        conn.rollback()
    with pytest.raises(instar.JobNotFound):
        app.get(job.id)
    assert app.jobs() == []


def test_a_job_enqueued_in_a_transaction_is_visible_and_runs_only_after_commit(
    app: instar.App, schema: str
) -> None:
    with psycopg.connect(POSTGRES) as conn:
        conn.execute(f"SET search_path TO {schema}")
        job = app.enqueue("add", {"a": 1, "b": 2}, connection=conn)
        app.run_worker(burst=True)
        with pytest.raises(instar.JobNotFound):
            app.get(job.id)
        conn.commit()
    app.run_worker(burst=True)
    done = app.get(job.id)
    assert (done.state, done.result) == (State.COMPLETED, 3)


def test_transactional_enqueue_on_sqlite_is_a_clear_error(tmp_path: object) -> None:
    with instar.App(f"sqlite:///{tmp_path}/jobs.db") as app:

        @app.job
        def noop() -> None:
            return None

        with pytest.raises(instar.ConfigurationError, match="needs the PostgreSQL backend"):
            noop.enqueue(connection=object())
        assert app.jobs() == []


def test_the_tables_live_in_the_schema_named_in_the_url(app: instar.App, schema: str) -> None:
    with psycopg.connect(POSTGRES) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
        }
    assert {"jobs", "events", "steps", "awakeables", "dependencies"} <= tables


def test_an_unreachable_server_is_a_clear_error_naming_host_and_database() -> None:
    with pytest.raises(instar.ConfigurationError) as failure:
        instar.App("postgresql://postgres@127.0.0.1:1/jobsdb").jobs()
    message = str(failure.value)
    assert "127.0.0.1:1/jobsdb" in message
    assert "check the host" in message


def test_wrong_credentials_are_a_clear_error() -> None:
    _postgres_or_skip()
    url = POSTGRES.replace("postgres@", "nobody_here@", 1)
    with pytest.raises(instar.ConfigurationError, match="nobody_here"):
        instar.App(url).jobs()


def test_a_schema_that_is_not_a_plain_identifier_is_refused() -> None:
    with pytest.raises(instar.ConfigurationError, match="not a plain lower-case identifier"):
        instar.App(f"{POSTGRES}?schema=x;drop").jobs()


def test_claiming_reads_only_the_ready_index(app: instar.App, schema: str) -> None:
    from instar.store.postgres.store import Q

    with psycopg.connect(POSTGRES) as conn:
        conn.execute(f"SET search_path TO {schema}")
        conn.execute("SET enable_seqscan TO off")
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                "EXPLAIN " + Q["claim"],
                {
                    "worker": "w",
                    "token": "t",
                    "now": 0.0,
                    "limit": 10,
                    "queues": None,
                    "names": ["a", "b"],
                },
            )
        )
    assert "jobs_ready" in plan


def test_a_roll_up_batch_reads_only_its_own_events_however_many_follow(
    app: instar.App, schema: str
) -> None:
    """The feed's roll-up counts 100 events at a time: a batch must not read the
    2,000 after the cursor to keep 100 (each batch would read all that are left)."""
    from instar.store.postgres.store import PostgresStore, Q

    app.enqueue_many("add", [{"a": n, "b": n} for n in range(2_000)])
    read: list[int] = []

    def events_read(node: dict[str, Any]) -> None:
        if node.get("Relation Name") == "events" and node.get("Alias") == "e":
            read.append(int(node["Actual Rows"]))
        for child in node.get("Plans", []):
            events_read(child)

    class Explaining:
        """The store's connection, which also explains (and runs) the roll-up."""

        def __init__(self, conn: psycopg.Connection[Any]) -> None:
            self.conn = conn
            self.plans: list[Any] = []

        def execute(self, query: str, params: Any = None) -> Any:
            if query == Q["roll_up"]:
                explain = "EXPLAIN (ANALYZE, FORMAT JSON) " + query
                self.plans.append(self.conn.execute(explain, params).fetchone()[0])  # type: ignore[index]
            return self.conn.execute(query, params)

    store = app.engine.store
    assert isinstance(store, PostgresStore)
    with psycopg.connect(POSTGRES) as conn:
        conn.execute(f"SET search_path TO {schema}")
        explaining = Explaining(conn)
        store._roll_up(explaining, 0, 100)  # type: ignore[arg-type]
        conn.rollback()
    [plan] = explaining.plans
    events_read(plan[0]["Plan"])
    assert read and max(read) <= 100, f"rows of events read: {read}"


def test_several_processes_migrating_a_new_schema_at_once_all_succeed(schema: str) -> None:
    from instar.store.postgres.store import PostgresStore

    url = f"{POSTGRES}?schema={schema}"
    versions: list[int] = []
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            store = PostgresStore(url)
            versions.append(store.migrate())
            store.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(versions)) == 1 and versions[0] >= 1


def test_a_serialization_failure_in_the_callers_transaction_is_reported_as_itself(
    app: instar.App, schema: str
) -> None:
    """A keyed enqueue in a REPEATABLE READ transaction, after another process
    committed the same key: the caller hears of the conflict (not of an aborted
    transaction), and their transaction is as it was before the call."""
    with psycopg.connect(POSTGRES) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute(f"SELECT count(*) FROM {schema}.jobs").fetchone()  # the snapshot is taken
        other = app.enqueue("add", {"a": 1, "b": 1}, key="order-7")  # another process commits
        with pytest.raises(instar.TransactionConflict, match="could not serialize"):
            app.enqueue("add", {"a": 1, "b": 1}, key="order-7", connection=conn)
        assert conn.execute("SELECT 1").fetchone() == (1,), "the caller's transaction still works"
        conn.rollback()
    assert [job.id for job in app.jobs()] == [other.id]


def test_a_lock_timeout_in_the_callers_transaction_is_reported_as_itself(
    app: instar.App, schema: str
) -> None:
    with psycopg.connect(POSTGRES) as holder, psycopg.connect(POSTGRES) as conn:
        app.enqueue("add", {"a": 0, "b": 0})  # the schema exists
        holder.execute(f"SET search_path TO {schema}")
        app.enqueue("add", {"a": 1, "b": 1}, key="order-8", connection=holder)  # not committed
        conn.execute("SET lock_timeout = '200ms'")
        with pytest.raises(instar.DatabaseTimeout, match="gave up waiting"):
            app.enqueue("add", {"a": 1, "b": 1}, key="order-8", connection=conn)
        assert conn.execute("SELECT 1").fetchone() == (1,), "the caller's transaction still works"
        conn.rollback()
        holder.commit()
    assert [job.key for job in app.jobs()] == ["order-8", None]


def test_an_enqueue_on_an_idle_connection_joins_the_transaction_it_starts(
    app: instar.App,
) -> None:
    with psycopg.connect(POSTGRES) as conn:
        before = conn.info.transaction_status
        job = app.enqueue("add", {"a": 1, "b": 2}, connection=conn)
        after = conn.info.transaction_status
        assert (before, after) == (
            psycopg.pq.TransactionStatus.IDLE,
            psycopg.pq.TransactionStatus.INTRANS,
        )
        conn.rollback()
    with pytest.raises(instar.JobNotFound):
        app.get(job.id)


def test_a_claim_alone_tells_other_processes_of_its_events(app: instar.App, schema: str) -> None:
    job = app.enqueue("add", {"a": 1, "b": 2})
    with instar.App(f"{POSTGRES}?schema={schema}") as other:
        heard = threading.Event()
        other.engine.subscribe(heard.set, Wake.EVENTS)  # listening once it returns
        batch = app.engine.exchange([], [], ClaimRequest("w1", 5, None, names=["add"]))
        assert [claimed.id for claimed in batch.claimed] == [job.id]
        assert heard.wait(10), "the claim's events were never announced"
    assert [e.trigger for e in app.history(job.id)] == ["enqueued", "claimed"]


def _running_and_done(app: instar.App, worker: str) -> tuple[instar.Job, list[Move]]:
    """A job of "add" claimed by ``worker``, and the moves that complete it."""
    [job] = app.engine.exchange([], [], ClaimRequest(worker, 1, None, names=["add"])).claimed
    now = app.clock.now()
    done = outcome_moves(job, Returned(3), retry=instar.Retry(), now=now, max_payload_bytes=1000)
    return job, done


def test_reports_alone_are_written_at_once_and_tell_other_processes(
    app: instar.App, schema: str
) -> None:
    app.enqueue("add", {"a": 1, "b": 2})
    job, done = _running_and_done(app, "w1")
    with instar.App(f"{POSTGRES}?schema={schema}") as other:
        heard = threading.Event()
        other.engine.subscribe(heard.set, Wake.EVENTS)  # listening once it returns
        assert app.engine.exchange(done, [], None).applied == [True]
        assert heard.wait(10), "the completion's event was never announced"
    assert app.get(job.id).state is State.COMPLETED
    assert [e.trigger for e in app.history(job.id)] == ["enqueued", "claimed", "completed"]


def test_moves_alone_leave_a_job_others_wait_on_and_a_stale_report_to_a_transaction(
    app: instar.App,
) -> None:
    """``apply_alone`` writes only moves that set off nothing and win: the job a
    dependant waits on, and a report whose lease token is stale, are left as
    they were (no move, no event, no refusal note) for the engine's transaction."""
    awaited = app.enqueue("add", {"a": 1, "b": 2})
    app.enqueue("add", {"a": 0, "b": 0}, after=[awaited.id])
    stale = app.enqueue("add", {"a": 2, "b": 2})
    plain = app.enqueue("add", {"a": 3, "b": 3})
    _, awaited_done = _running_and_done(app, "w1")
    _, stale_done = _running_and_done(app, "w1")
    _, plain_done = _running_and_done(app, "w1")
    stale_done = [replace(move, guard_token="not-its-token") for move in stale_done]
    moves = [*awaited_done, *stale_done, *plain_done]
    before = {job.id: app.history(job.id) for job in (awaited, stale)}

    assert app.engine.store.apply_alone(moves, app.clock.now()) == [False, False, True]
    assert [app.get(j.id).state for j in (awaited, stale, plain)] == [
        State.RUNNING,
        State.RUNNING,
        State.COMPLETED,
    ]
    assert {job_id: app.history(job_id) for job_id in before} == before
    assert app.history(plain.id)[-1].trigger == "completed"


def test_reports_written_alone_before_the_rest_failed_are_named(
    app: instar.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moves written alone are committed before the transaction of those left
    (here, a job with a dependant) fails: the error says which were written,
    so that only the rest are sent again (which then win, refusing nothing)."""
    awaited = app.enqueue("add", {"a": 1, "b": 2})
    dependant = app.enqueue("add", {"a": 0, "b": 0}, after=[awaited.id])
    plain = app.enqueue("add", {"a": 3, "b": 3})
    _, awaited_done = _running_and_done(app, "w1")
    _, plain_done = _running_and_done(app, "w1")
    real_apply = SQLTransaction.apply_moves

    def fail(tx: SQLTransaction, moves: Sequence[Move]) -> Applied:
        raise psycopg.OperationalError("the server went away mid-transaction")

    monkeypatch.setattr(SQLTransaction, "apply_moves", fail)
    with pytest.raises(ReportsPartlyWritten) as partly:
        app.engine.exchange([*awaited_done, *plain_done], [], None)
    assert partly.value.written == [False, True]
    assert isinstance(partly.value.__cause__, instar.DatabaseUnavailable)
    states = [app.get(job.id).state for job in (awaited, dependant, plain)]
    assert states == [State.RUNNING, State.PENDING, State.COMPLETED]

    monkeypatch.setattr(SQLTransaction, "apply_moves", real_apply)
    assert app.engine.exchange(awaited_done, [], None).applied == [True]
    states = [app.get(job.id).state for job in (awaited, dependant, plain)]
    assert states == [State.COMPLETED, State.READY, State.COMPLETED]
    triggers = [e.trigger for job in (awaited, plain) for e in app.history(job.id)]
    assert "refused" not in triggers
