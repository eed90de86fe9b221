"""The PostgreSQL store: many workers on many machines share one database.

Claims take a batch with ``FOR UPDATE SKIP LOCKED``; moves, events and lease
extensions are batched as on SQLite. Every commit that makes a job ready also
sends a NOTIFY, which a listening thread turns into an immediate wake-up of
this process's workers (polling stays as the fallback). Instar can live in
its own schema beside an application's tables (``?schema=instar``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from instar.errors import (
    ConfigurationError,
    DatabaseTimeout,
    DatabaseUnavailable,
    InstarError,
    StoreRefused,
    TransactionConflict,
)
from instar.lifecycle import State
from instar.models import Job
from instar.payload import safe_text
from instar.store.contract import (
    SCAN_FACTOR,
    Advance,
    ArgsMatch,
    ClaimRequest,
    Move,
    NewJob,
    Recheck,
    Wake,
    alike_but_args,
)
from instar.store.records import (
    datetime_of,
    in_claim_order,
    jobs_from,
    moves_json,
    new_job_params,
    new_job_record,
    recheck_from,
)
from instar.store.sql_blocks import load_queries
from instar.store.sql_store import SQLStore, SQLTransaction
from instar.store.urls import redact
from instar.vocabulary import Trigger

log = logging.getLogger("instar.postgres")

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

COPY_FROM = 100
"""From this many jobs without keys that differ in more than their arguments,
the jobs and their first events are written with COPY: three round trips
instead of one, but psycopg encodes the rows in C and the server inserts them
in batches. Batches of 10,000 such jobs (priorities and limit keys varied;
the store alone, 6 rounds each in fresh processes on this project's 2-core
machine): 40,000-55,000 jobs/s as arrays through ``unnest``, 51,000-83,000
with COPY. Jobs alike but for their arguments take one statement still:
73,000-75,000/s, against 70,000-72,000 with COPY. The threshold itself was
not measured size by size: it is where two more round trips are surely paid
back, left for small batches to the one statement."""

_JOB_COPY_TYPES = [
    "int8", "text", "text", "text", "int4", "int4", "text", "text", "float8", "float8",
    "float8", "int8", "float8", "float8", "text", "text", "text",
]  # fmt: skip
"""The types of copy_jobs' columns: the id, then ``new_job_params``' values."""
_EVENT_COPY_TYPES = ["int8", "float8", "text", "text", "text", "int4", "text", "text", "text"]


Q = load_queries("instar.store.postgres")
# A claim under limits: the candidates' common table expressions, then what
# finds their limits' locks, or what claims among them.
_LIMIT_LOCKS = f"WITH {Q['flow_candidates']}\n{Q['limit_locks']}"
_CLAIM_LIMITED = f"WITH {Q['flow_candidates']}\n{Q['claim_limited']}"
# A claim alone: the claim, then its events and wake-up in the same statement.
_CLAIM_ALONE = f"WITH claimed AS (\n{Q['claim']}\n),\n{Q['claim_alone_rest']}"
# Moves alone: the moves of jobs nothing waits on, then their events and wake-up.
_MOVE_ALONE = f"WITH moved AS (\n{Q['move_batch']}\n),\n{Q['move_alone_rest']}"


class PostgresStore(SQLStore):
    """``pool_size``: pooled connections per process at most; a worker holds up
    to four at once (its batches, its claims under limits, its heartbeat,
    maintenance), and what its handlers enqueue takes the rest. Beside the pool:
    the connection it listens on, and two of the store's own in autocommit (one
    for writes of one statement, one for claims with nothing else to write)."""

    supports_listen = True
    local_reads = False
    concurrent_writers = True
    Q = Q
    migrations_package = "instar.store.postgres.migrations"

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 6,
        connect_timeout: float = 10.0,
        read_only: bool = False,
    ) -> None:
        self.conninfo, self.schema = _split_url(url)
        self.channel = channel_of(self.schema)
        parts = urlsplit(self.conninfo)
        self._where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"
        try:
            # Fail fast, in the server's own words, before a pool retries in the background.
            psycopg.connect(self.conninfo, connect_timeout=int(connect_timeout)).close()
        except psycopg.Error as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {self._where}: {why}; "
                "check the host, port, database name and credentials in the URL"
            ) from None
        self._options = f"-c search_path={self.schema}{_READ_ONLY if read_only else ''}"
        self._pool = ConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=pool_size,
            kwargs={"options": self._options},
            open=False,
            name="instar",
            reconnect_timeout=300,
            # A worker whose database is down hears about it within seconds, logs
            # it, and backs off, instead of waiting half a minute for a connection.
            timeout=5.0,
        )
        self._pool.open(wait=True, timeout=connect_timeout)
        self._marker = 0
        self._listeners: list[Callable[[Wake], None]] = []
        self._closing = threading.Event()
        self._listening = threading.Event()
        self._listen_timeout = connect_timeout
        self._listener: threading.Thread | None = None  # started by the first watch
        self._watch_lock = threading.Lock()
        self._solo = _OwnConnection(self.conninfo, self._options, self._where)
        # Claims plan as claim_plan_generic says, for the whole session: a claim
        # alone is one statement, with no transaction to SET LOCAL in.
        self._claimer = _OwnConnection(self.conninfo, self._options + _CLAIM_PLANS, self._where)

    # -- plumbing ---------------------------------------------------------------

    @contextmanager
    def _write(
        self, connection: psycopg.Connection[Any] | None = None, pipeline: bool = False
    ) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on a pooled connection, or the caller's own connection
        (transactional enqueue: it commits or rolls back with the caller's work).
        With ``pipeline``, statements are sent without waiting for each: the
        transaction costs a round trip per result read, plus one for the rest and
        the commit. Driver errors come out as Instar's (``_translate``)."""
        try:
            if connection is not None:
                with self._inside(connection) as conn:
                    yield conn
                return
            with self._pool.connection() as conn:
                if not pipeline:
                    yield conn
                    return
                with conn.pipeline():
                    yield conn
                    conn.commit()
        except Exception as exc:
            raise self._translate(exc) from exc

    @contextmanager
    def _autocommit(self) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor in autocommit for a write of one statement: the store's own
        (``_OwnConnection``) when no other thread is using it, otherwise one on a
        pooled connection, switched to autocommit for the call."""
        with self._solo.cursor(self._closing) as cursor:
            if cursor is not None:
                yield cursor
                return
        with self._pool.connection() as conn:
            conn.autocommit = True
            try:
                yield conn.cursor()
            finally:
                conn.autocommit = False

    @contextmanager
    def _inside(self, connection: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
        """Our statements inside the caller's transaction, under a savepoint: if one
        fails, the caller's transaction is left as it was before the call (not
        aborted), and the first error is the one raised. Our tables are in our
        schema: the caller's search_path points there until the savepoint ends."""
        if not connection.autocommit and (
            connection.info.transaction_status is TransactionStatus.IDLE
        ):
            # Start the caller's transaction as any statement of theirs would, so that
            # the savepoint below joins it instead of committing on its own.
            connection.execute(Q["current_search_path"])
        with connection.transaction():
            previous = connection.execute(Q["current_search_path"]).fetchone()
            connection.execute(Q["set_local_search_path"], (self.schema,))
            yield connection
            restore = previous[0] if previous else ""
            connection.execute(Q["set_local_search_path"], (restore,))

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except Exception as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: Exception) -> Exception:
        """A driver error as the Instar error that says what it means for the caller;
        anything else unchanged."""
        if isinstance(exc, InstarError):
            return exc
        why = _first_line(exc)
        if isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
            return TransactionConflict(
                f"PostgreSQL could not serialize this transaction ({why}); nothing of it "
                "was kept: run the whole transaction again"
            )
        if isinstance(exc, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
            return DatabaseTimeout(
                f"PostgreSQL gave up waiting ({why}): a lock_timeout or statement_timeout "
                "fired; nothing of the statement was kept"
            )
        if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
            return ConfigurationError(f"the database at {self._where} was opened read-only")
        if isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolTimeout):
            return DatabaseUnavailable(f"PostgreSQL at {self._where} is unavailable: {why}")
        if isinstance(exc, psycopg.DataError | psycopg.IntegrityError | UnicodeError | ValueError):
            return StoreRefused(f"PostgreSQL refused the data of a write: {why}")
        return exc

    @contextmanager
    def _migration(self) -> Iterator[psycopg.Connection[Any]]:
        """Several processes may start at once: one migrates, the others wait on
        the advisory lock, then find it done. On a pooled connection: a worker
        starting opens no connection for it (each costs the server about 5 ms of
        CPU, and four workers starting at once on two cores wait for that)."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute(Q["migration_lock"])
                conn.execute(sql.SQL(Q["create_schema"]).format(schema=sql.Identifier(self.schema)))
                conn.execute(Q["set_local_search_path"], (self.schema,))
                yield conn
        except Exception as exc:
            raise self._translate(exc) from exc

    def check(self) -> list[str]:
        """PostgreSQL checks its own pages; nothing for Instar to add."""
        return []

    def _run_script(self, conn: psycopg.Connection[Any], script: str) -> None:
        conn.execute(script)

    def _claim(self, conn: psycopg.Connection[Any], claim: ClaimRequest, now: float) -> Any:
        params = _claim_params(claim, now)
        if claim.limits is None:
            conn.execute(Q["claim_plan_generic"])
            claimed = conn.execute(Q["claim"], params, binary=True)
        else:
            conn.execute(Q["claim_plan"])
            # Under limits: find the limits the candidates are under, lock them,
            # then count and claim again, now that no other claim under them can
            # commit before this one (only jobs under these locks are taken).
            params["queues_filter"] = params["queues"]
            params["jobs"], params["queues"] = claim.limits.as_json()
            params["scan"] = claim.limit * SCAN_FACTOR
            conn.execute(Q["claim_plan_no_jit"])
            params["locked"] = None
            locks = [row[0] for row in conn.execute(_LIMIT_LOCKS, params).fetchall()]
            if locks:
                conn.execute(Q["lock_limits"], {"locks": locks})
            params["locked"] = locks
            claimed = conn.execute(_CLAIM_LIMITED, params, binary=True)
            conn.execute(Q["claim_plan_jit_reset"])
        conn.execute(Q["claim_plan_reset"])
        return claimed

    def _insert_rows(
        self, conn: psycopg.Connection[Any], jobs: Sequence[NewJob], now: float, actor: str | None
    ) -> list[int | None]:
        if alike_but_args(jobs):
            # Jobs and their events in one statement: the shared columns once,
            # the arguments as one JSON array (psycopg dumps arrays element by
            # element in Python: 13 arrays cost ~17 µs a job, this ~0.2).
            first = jobs[0]
            params = {
                "name": first.name,
                "queue": first.queue,
                "state": first.state.value,
                "priority": first.priority,
                "max_attempts": first.max_attempts,
                "args": json.dumps([j.args_json for j in jobs]),
                "run_at": first.run_at,
                "lease_seconds": first.lease_seconds,
                "pause_timeout": first.pause_timeout,
                "parent_id": first.parent_id,
                "limit_key": first.limit_key,
                "rate_key": first.rate_key,
                "trace_context": first.trace_context,
                "now": now,
                "actor": actor,
                "trigger": Trigger.ENQUEUED.value,
            }
            row = conn.execute(Q["insert_jobs_alike"], params, binary=True).fetchone()
            assert row is not None, "an aggregate returns one row"
            return list(row[0])
        keyless = all(job.key is None for job in jobs)
        if len(jobs) >= COPY_FROM and keyless:
            return list(self._copy_rows(conn, jobs, now, actor))
        if len(jobs) > 1 and keyless:
            # Jobs and their events in one statement, the columns as arrays sent
            # in binary (no quoting of each element).
            columns = {
                "name": [j.name for j in jobs],
                "queue": [j.queue for j in jobs],
                "state": [j.state.value for j in jobs],
                "priority": [j.priority for j in jobs],
                "max_attempts": [j.max_attempts for j in jobs],
                "args": [j.args_json for j in jobs],
                "run_at": [j.run_at for j in jobs],
                "lease_seconds": [j.lease_seconds for j in jobs],
                "pause_timeout": [j.pause_timeout for j in jobs],
                "parent_id": [j.parent_id for j in jobs],
                "limit_key": [j.limit_key for j in jobs],
                "rate_key": [j.rate_key for j in jobs],
                "trace_context": [j.trace_context for j in jobs],
                "now": now,
                "actor": actor,
                "trigger": Trigger.ENQUEUED.value,
            }
            return [row[0] for row in conn.execute(Q["insert_jobs_bulk"], columns)]
        ids: list[int | None] = []
        for job in jobs:
            row = conn.execute(Q["insert_job"], new_job_params(job, now)).fetchone()
            ids.append(None if row is None else row[0])
        self._first_events(conn, [i for i in ids if i is not None], now, actor)
        return ids

    def _copy_rows(
        self, conn: psycopg.Connection[Any], jobs: Sequence[NewJob], now: float, actor: str | None
    ) -> list[int]:
        """Jobs without keys and their first events, written with COPY (see
        ``COPY_FROM``); their ids, in the caller's order."""
        ids = [row[0] for row in conn.execute(Q["reserve_job_ids"], {"n": len(jobs)})]
        cursor = conn.cursor()
        with cursor.copy(Q["copy_jobs"]) as copy:
            copy.set_types(_JOB_COPY_TYPES)
            for job_id, job in zip(ids, jobs, strict=True):
                copy.write_row((job_id, *new_job_params(job, now)))
        enqueued = Trigger.ENQUEUED.value
        with cursor.copy(Q["copy_enqueued_events"]) as copy:
            copy.set_types(_EVENT_COPY_TYPES)
            for job_id, job in zip(ids, jobs, strict=True):
                copy.write_row((job_id, now, None, job.state.value, enqueued, 0, None, actor, None))
        return ids

    def _roll_up(self, conn: psycopg.Connection[Any], after: int, limit: int) -> tuple[int, int]:
        conn.execute(Q["roll_up_plan"])
        row = conn.execute(Q["roll_up"], {"after": after, "limit": limit}).fetchone()
        assert row is not None
        return (after if row[0] is None else int(row[0])), int(row[1])

    def args_path(self, match: ArgsMatch) -> Any:
        return list(match.path)

    def _sql_list(self, ids: Sequence[int] | Sequence[str]) -> list[Any]:
        return list(ids)

    def _heartbeat(
        self, conn: psycopg.Connection[Any], params: dict[str, Any]
    ) -> Iterable[Sequence[Any]]:
        return conn.execute(Q["heartbeat"], params)

    def _moves(self, conn: psycopg.Connection[Any], moves: Sequence[Move]) -> dict[str, Any]:
        return {"moves": moves_json(moves)}

    def _pairs(self, due: Sequence[tuple[int, int]]) -> dict[str, Any]:
        return {"ids": [job for job, _ in due], "versions": [version for _, version in due]}

    def _before_commit(self, conn: psycopg.Connection[Any], wakes: set[Wake]) -> None:
        """NOTIFY is transactional: listeners everywhere hear of it when this commits.
        One notification per transaction; ``ready`` implies new events too."""
        payload = Wake.READY.value if Wake.READY in wakes else Wake.EVENTS.value
        conn.execute(Q["notify"], {"channel": self.channel, "payload": payload})

    def close(self) -> None:
        self._closing.set()
        with self._watch_lock:
            listener = self._listener
        if listener is not None:
            try:
                with self._pool.connection() as conn:
                    # Wakes the listening thread so it can end now.
                    conn.execute(Q["notify"], {"channel": self.channel, "payload": "close"})
            except psycopg.Error:
                pass  # the server is gone: the listener ends at its next timeout
        self._pool.close()
        self._solo.close()
        self._claimer.close()
        if listener is not None:
            listener.join(timeout=5)

    def watch(self, listener: Callable[[Wake], None]) -> None:
        """Call ``listener`` (in the listening thread) when any process commits
        events. The first call starts listening, on a connection of its own, and
        returns once the LISTEN is in place (or ``connect_timeout`` has passed):
        a job enqueued afterwards does not slip past. A process that never
        watches (one that only enqueues) is sent no notification."""
        with self._watch_lock:
            self._listeners = [*self._listeners, listener]
            if self._listener is None and not self._closing.is_set():
                self._listener = threading.Thread(
                    target=self._listen, name="instar-listen", daemon=True
                )
                self._listener.start()
        self._listening.wait(timeout=self._listen_timeout)

    def _listen(self) -> None:
        """LISTEN on a dedicated connection; reconnect with backoff when it drops."""
        delay = 0.1
        listen = sql.SQL(Q["listen"]).format(channel=sql.Identifier(self.channel))
        while not self._closing.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute(listen)
                    if self._listening.is_set():
                        # Back after a drop: what was notified meanwhile is lost,
                        # so every follower reads again.
                        self._heard(Wake.READY.value)
                    self._listening.set()
                    delay = 0.1
                    while not self._closing.is_set():
                        for notice in conn.notifies(timeout=0.5):
                            if self._closing.is_set():
                                return
                            self._heard(notice.payload)
            except psycopg.Error as exc:
                if self._closing.is_set():
                    return
                log.warning("listening for new jobs failed (%s); retrying in %.1fs", exc, delay)
                self._heard(Wake.READY.value)  # wake pollers: something may have been missed
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _heard(self, payload: str) -> None:
        wake = Wake.READY if payload == Wake.READY.value else Wake.EVENTS
        if wake is Wake.READY:
            self._marker += 1
        for listener in self._listeners:
            listener(wake)

    def enqueue_one(self, job: NewJob, actor: str | None, now: float) -> Job | None:
        """One statement in autocommit: the job, its first event and the NOTIFY
        commit together, in one round trip."""
        params = {
            "name": job.name,
            "queue": job.queue,
            "state": job.state.value,
            "priority": job.priority,
            "max_attempts": job.max_attempts,
            "args": job.args_json,
            "key": job.key,
            "run_at": job.run_at,
            "lease_seconds": job.lease_seconds,
            "pause_timeout": job.pause_timeout,
            "parent_id": job.parent_id,
            "limit_key": job.limit_key,
            "rate_key": job.rate_key,
            "trace_context": job.trace_context,
            "now": now,
            "actor": None if actor is None else safe_text(actor),
            "trigger": Trigger.ENQUEUED.value,
            "channel": self.channel,
            "payload": (Wake.READY if job.state is State.READY else Wake.EVENTS).value,
        }
        try:
            with self._autocommit() as cursor:
                row = cursor.execute(Q["enqueue_one"], params).fetchone()
        except Exception as exc:
            raise self._translate(exc) from exc
        if row is None:
            return None
        return new_job_record(int(row[0]), job, datetime_of(now))

    def advance_one(self, advance: Advance, now: float) -> bool:
        """One statement in autocommit (``machine_advance``): one round trip."""
        try:
            with self._autocommit() as cursor:  # a cursor executes as a connection does
                return SQLTransaction(self, cursor, now).advance_instance(advance)
        except Exception as exc:
            raise self._translate(exc) from exc

    def apply_alone(self, moves: Sequence[Move], now: float) -> list[bool]:
        """One statement in autocommit (``move_batch`` with ``alone``, then
        ``move_alone_rest``): the moves, their events and the wake-up commit
        together, in one round trip."""
        ready = any(move.to_state is State.READY for move in moves)
        try:
            params = {
                "moves": moves_json(moves),  # data it refuses is refused as the database's
                "now": now,
                "alone": True,
                "channel": self.channel,
                "payload": (Wake.READY if ready else Wake.EVENTS).value,
            }
            with self._autocommit() as cursor:
                won = {row[0] for row in cursor.execute(_MOVE_ALONE, params)}
        except Exception as exc:
            raise self._translate(exc) from exc
        return [move.job_id in won for move in moves]

    def claim_alone(
        self, claim: ClaimRequest, recheck: Sequence[int], now: float
    ) -> tuple[list[Job], list[Recheck]]:
        """One round trip, in autocommit, on the store's claiming connection: the
        recheck (a read) and the claim with its events and wake-up (one
        statement) sent together. A claim under limits takes locks first and
        goes the general way (a transaction), as it does when another thread of
        this process is claiming."""
        if claim.limits is None:
            try:
                with self._claimer.cursor(self._closing) as cursor:
                    if cursor is not None:
                        return self._claim_in_one_trip(cursor, claim, recheck, now)
            except Exception as exc:
                raise self._translate(exc) from exc
        return super().claim_alone(claim, recheck, now)

    def _claim_in_one_trip(
        self, cursor: psycopg.Cursor[Any], claim: ClaimRequest, recheck: Sequence[int], now: float
    ) -> tuple[list[Job], list[Recheck]]:
        conn = cursor.connection
        checked = None
        with conn.pipeline():
            if recheck:
                checked = conn.execute(Q["recheck"], {"worker": claim.worker, "ids": list(recheck)})
            if claim.limit > 0:
                params = _claim_params(claim, now)
                params.update(
                    trigger=Trigger.CLAIMED.value, channel=self.channel, payload=Wake.EVENTS.value
                )
                cursor.execute(_CLAIM_ALONE, params, binary=True)
        claimed = in_claim_order(jobs_from(cursor)) if claim.limit > 0 else []
        rechecked = [] if checked is None else [recheck_from(row) for row in checked]
        return claimed, rechecked

    def database_time(self) -> float:
        with self._read() as conn:
            row = conn.execute(Q["database_time"]).fetchone()
        assert row is not None
        return float(row[0])

    def change_marker(self) -> int:
        """Counts ready notifications: changes when another process made a job ready."""
        return self._marker


def _claim_params(claim: ClaimRequest, now: float) -> dict[str, Any]:
    """The parameters every claim statement takes; ``token``, 64 random bits of
    this claim's own, starts the lease token of each job it claims."""
    return {
        "token": secrets.token_hex(8),
        "worker": claim.worker,
        "now": now,
        "limit": claim.limit,
        "queues": None if claim.queues is None else list(claim.queues),
        "names": None if claim.names is None else list(claim.names),
    }


_READ_ONLY = " -c default_transaction_read_only=on"
_CLAIM_PLANS = " -c enable_sort=off -c plan_cache_mode=force_generic_plan -c jit=off"
"""The claiming connection's session: claim_plan_generic's settings, and no JIT
(the sort of the claim's events, priced as enable_sort=off prices every sort,
would otherwise be compiled: hundreds of milliseconds, see claim_plan_no_jit)."""


class _OwnConnection:
    """A connection of the store's own in autocommit, for writes of one statement
    (one round trip each) that one thread at a time makes: no hand-off through
    the pool, no switch of mode and no new cursor, about 35 µs of this
    process's CPU a write (``make bench``: a durable machine's send). Opened on
    first use; a connection that broke is dropped, and the next use opens
    another."""

    def __init__(self, conninfo: str, options: str, where: str) -> None:
        self._conninfo, self._options, self._where = conninfo, options, where
        self._cursor: psycopg.Cursor[Any] | None = None
        self._lock = threading.Lock()

    @contextmanager
    def cursor(self, closing: threading.Event) -> Iterator[psycopg.Cursor[Any] | None]:
        """Its cursor, or None while another thread uses it (the caller goes
        through the pool instead). Raises ``ConfigurationError`` once the store
        is closing."""
        if not self._lock.acquire(blocking=False):
            yield None
            return
        try:
            if closing.is_set():
                raise ConfigurationError(f"the store of {self._where} is closed")
            if self._cursor is None or self._cursor.connection.closed:
                conn = psycopg.connect(
                    self._conninfo, autocommit=True, options=self._options, connect_timeout=5
                )
                self._cursor = conn.cursor()
            cursor = self._cursor
            try:
                yield cursor
            except psycopg.OperationalError:
                self._cursor = None
                cursor.connection.close()
                raise
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:  # a write on it ends first
            if self._cursor is not None:
                self._cursor.connection.close()
                self._cursor = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def channel_of(schema: str) -> str:
    """The NOTIFY channel of one schema: workers and feeds of other schemas in the
    same database are not woken. Channel names stop at 63 bytes."""
    channel = f"instar_{schema}"
    if len(channel) <= 63:
        return channel
    return "instar_" + hashlib.sha256(schema.encode()).hexdigest()[:32]


def _split_url(url: str) -> tuple[str, str]:
    """The libpq URL without Instar's own ``schema`` option, and the schema."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    schema = query.pop("schema", "public")
    if not _IDENTIFIER.match(schema):
        raise ConfigurationError(
            f"schema {schema!r} in {redact(url)!r} is not a plain lower-case identifier; "
            "use letters, digits and underscores"
        )
    scheme = "postgresql"
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), "")), schema
