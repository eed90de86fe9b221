"""The SQLite store: one file, WAL, every write in a ``BEGIN IMMEDIATE`` transaction.

One writing connection per store, shared by the threads of one process
behind a lock (SQLite admits one writer at a time anyway), and a reading
connection per thread, so that a read never waits behind a commit's fsync or
another thread's read (WAL lets readers run beside the writer; a read sees
every commit made before it). The
writer's ``PRAGMA data_version`` changes only when *another* connection
commits, which is how idle workers and event feeds in other processes notice
new work.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from instar.errors import (
    ConfigurationError,
    DatabaseCorrupt,
    DatabaseUnavailable,
    InstarError,
    StoreRefused,
)
from instar.models import Job
from instar.payload import safe_text
from instar.store.contract import (
    SCAN_FACTOR,
    ArgsMatch,
    ClaimRequest,
    Move,
    NewJob,
    Wake,
    alike_but_args,
)
from instar.store.records import datetime_of, move_rows, new_job_params, new_job_record
from instar.store.sql_blocks import load_queries
from instar.store.sql_store import SQLStore
from instar.vocabulary import Trigger

Q = load_queries("instar.store.sqlite")
# A claim under limits: the candidates' common table expressions, then the claim.
_CLAIM_LIMITED = f"WITH {Q['flow_candidates']},\n{Q['claim_limited']}"

SYNCHRONOUS_MODES = ("full", "normal", "extra", "off")

_TEXT = functools.partial(str, encoding="utf-8", errors="surrogateescape")


class _Reader:
    """One thread's reading connection: closed when the thread ends (its
    thread-local values go, and this with them) or when the store closes."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        self.conn.close()


class SQLiteStore(SQLStore):
    supports_listen = False
    local_reads = True
    concurrent_writers = False
    Q = Q
    migrations_package = "instar.store.sqlite.migrations"

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "full",
        busy_timeout: float = 30.0,
        read_only: bool = False,
    ) -> None:
        if synchronous.lower() not in SYNCHRONOUS_MODES:
            raise ConfigurationError(
                f"synchronous={synchronous!r} is not a SQLite mode; use one of {SYNCHRONOUS_MODES}"
            )
        self.path = path
        parent = Path(path).parent
        if path != ":memory:" and not parent.is_dir():
            raise ConfigurationError(
                f"cannot open SQLite database {path!r}: folder {str(parent)!r} does not exist; "
                "create it or pass another --database"
            )
        if read_only and path != ":memory:" and not Path(path).is_file():
            raise ConfigurationError(
                f"no database at {path!r}; check the path (reading never creates one)"
            )
        target = f"file:{quote(str(Path(path).absolute()))}?mode=ro" if read_only else path
        try:
            self._conn = sqlite3.connect(
                target,
                isolation_level=None,
                check_same_thread=False,
                timeout=busy_timeout,
                uri=read_only,
            )
            # Text another writer stored as invalid UTF-8 still reads back (the bad
            # bytes as lone surrogates, which Instar escapes wherever it shows them).
            self._conn.text_factory = _TEXT
            if not read_only:
                self._conn.execute(Q["pragmas"])
                self._conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
                self._conn.execute(Q["staged_moves"])
        except sqlite3.DatabaseError as exc:
            translated = self._translate(exc)
            if isinstance(translated, InstarError):
                raise translated from None
            raise ConfigurationError(
                f"cannot open SQLite database {path!r}: {exc}; check the path and its permissions"
            ) from None
        self._lock = threading.RLock()
        self._reader_target = f"file:{quote(str(Path(path).absolute()))}?mode=ro"
        self._busy_timeout = busy_timeout
        self._readers = threading.local()
        self._opened: weakref.WeakSet[_Reader] = weakref.WeakSet()  # to close them all
        self._closed = False

    def check(self) -> list[str]:
        """SQLite's own quick check of every page: the problems it finds (none: [])."""
        try:
            with self._read() as conn:
                found = [row[0] for row in conn.execute(Q["quick_check"])]
        except DatabaseCorrupt as damaged:  # too damaged for the check to run
            return [str(damaged)]
        if found == ["ok"]:
            return []
        lines = [line for row in found for line in str(row).splitlines()]
        return [line for line in lines if not line.startswith("***")] or lines

    # -- plumbing -------------------------------------------------------

    @contextmanager
    def _write(
        self, connection: Any = None, pipeline: bool = False
    ) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE takes the write lock up front
        so that two processes never deadlock upgrading a read lock."""
        if connection is not None:
            raise ConfigurationError(
                "enqueueing inside your own transaction (connection=...) needs the "
                "PostgreSQL backend"
            )
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except Exception as exc:
                raise self._translate(exc) from exc

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """Each thread reads on a connection of its own (autocommit: each
        statement sees the latest commit), never waiting for another's read or
        for a commit; a database in memory is private to its one connection."""
        if self.path == ":memory:":
            with self._lock:
                try:
                    yield self._conn
                except Exception as exc:
                    raise self._translate(exc) from exc
            return
        try:
            yield self._reader()
        except Exception as exc:
            raise self._translate(exc) from exc

    def _reader(self) -> sqlite3.Connection:
        reader: _Reader | None = getattr(self._readers, "reader", None)
        if reader is None:
            if self._closed:
                raise ConfigurationError(f"the store of {self.path!r} is closed")
            conn = sqlite3.connect(
                self._reader_target,
                isolation_level=None,
                check_same_thread=False,
                timeout=self._busy_timeout,
                uri=True,
            )
            conn.text_factory = _TEXT
            reader = self._readers.reader = _Reader(conn)
            with self._lock:
                self._opened.add(reader)
        return reader.conn

    def _translate(self, exc: Exception) -> Exception:
        """A driver error as the Instar error that says what it means for the caller;
        anything else unchanged."""
        if isinstance(exc, InstarError):
            return exc
        why = str(exc).strip() or type(exc).__name__
        if isinstance(exc, sqlite3.DatabaseError) and (
            "malformed" in why or "not a database" in why
        ):
            return DatabaseCorrupt(
                f"the SQLite file {self.path!r} is damaged ({why}); restore it from a "
                "backup, or move it away to start with a new database"
            )
        if isinstance(exc, MemoryError):
            # SQLITE_NOMEM on a database of Instar's size: a damaged page that
            # claims a size no allocation meets.
            return DatabaseCorrupt(
                f"the SQLite file {self.path!r} is damaged (SQLite ran out of memory reading "
                "a page that claims an impossible size); restore it from a backup, or move "
                "it away to start with a new database"
            )
        if isinstance(exc, sqlite3.OperationalError) and "readonly" in why:
            return ConfigurationError(f"the database {self.path!r} is read-only here ({why})")
        if isinstance(exc, sqlite3.OperationalError) and (
            "locked" in why or "busy" in why or "disk" in why or "unable to open" in why
        ):
            return DatabaseUnavailable(f"the SQLite file {self.path!r} is unavailable: {why}")
        if isinstance(
            exc,
            sqlite3.DataError
            | sqlite3.IntegrityError
            | sqlite3.InterfaceError
            | UnicodeError
            | OverflowError
            | ValueError,
        ) or (isinstance(exc, sqlite3.OperationalError) and "JSON" in why):
            return StoreRefused(f"SQLite refused the data of a write: {why}")
        return exc

    _migration = _write

    def _run_script(self, conn: sqlite3.Connection, sql: str) -> None:
        for statement in _split_statements(sql):
            conn.execute(statement)

    def _claim(self, conn: sqlite3.Connection, claim: ClaimRequest, now: float) -> sqlite3.Cursor:
        params: dict[str, Any] = {
            "worker": claim.worker,
            "now": now,
            "limit": claim.limit,
            "names": None if claim.names is None else json.dumps(list(claim.names)),
        }
        if claim.limits is not None:
            params["jobs"], params["queues"] = claim.limits.as_json()
            params["queue_filter"] = (
                None if claim.queues is None else json.dumps(list(claim.queues))
            )
            params["scan"] = claim.limit * SCAN_FACTOR
            return conn.execute(_CLAIM_LIMITED, params)
        if claim.queues is None:
            return conn.execute(Q["claim_any_queue"], params)
        params["queues"] = json.dumps(list(claim.queues))
        return conn.execute(Q["claim_from_queues"], params)

    def enqueue_one(self, job: NewJob, actor: str | None, now: float) -> Job | None:
        """Two statements under the write lock, without a ``Transaction``: a job
        that waits for no other sets nothing else off, and no wake-up is sent
        (other processes see the commit through ``PRAGMA data_version``). None
        when its key exists already: nothing is written."""
        actor = None if actor is None else safe_text(actor)
        with self._write() as conn:
            [job_id] = self._insert_rows(conn, [job], now, actor)
        return None if job_id is None else new_job_record(job_id, job, datetime_of(now))

    def _insert_rows(
        self, conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float, actor: str | None
    ) -> list[int | None]:
        if len(jobs) > 1 and all(j.key is None for j in jobs):
            # No key can collide, so ids are consecutive under the write lock.
            first = conn.execute(Q["max_job_id"]).fetchone()[0] + 1
            if alike_but_args(jobs):
                # One statement reads the arguments from a JSON array (about 4x executemany).
                row = new_job_params(jobs[0], now)
                params = (*row[:5], json.dumps([j.args_json for j in jobs]), *row[6:])
                conn.execute(Q["insert_jobs_alike"], params)
            else:
                conn.executemany(Q["insert_job"], [new_job_params(j, now) for j in jobs])
            new = range(first, first + len(jobs))
            self._first_events(conn, new, now, actor)
            return list(new)
        # One by one (keys may collide): each new job's event from its own values,
        # not read back through its id (one job: 11 -> 5 µs).
        ids: list[int | None] = []
        events = []
        enqueued = Trigger.ENQUEUED.value
        for job in jobs:
            cursor = conn.execute(Q["insert_job"], new_job_params(job, now))
            job_id = int(cursor.lastrowid or 0) if cursor.rowcount else None
            ids.append(job_id)
            if job_id is not None:
                events.append((job_id, now, job.state.value, enqueued, actor))
        conn.executemany(Q["insert_enqueued_event"], events)
        return ids

    def _roll_up(self, conn: sqlite3.Connection, after: int, limit: int) -> tuple[int, int]:
        last, count = conn.execute(
            Q["rollup_batch_end"], {"after": after, "limit": limit}
        ).fetchone()
        if count:
            params = {"after": after, "upto": last}
            conn.execute(Q["roll_up_flows"], params)
            conn.execute(Q["roll_up_totals"], params)
        return int(last or after), int(count)

    def args_path(self, match: ArgsMatch) -> Any:
        return match.sqlite_path()

    def _sql_list(self, ids: Sequence[int] | Sequence[str]) -> str:
        return json.dumps(list(ids))

    def _heartbeat(
        self, conn: sqlite3.Connection, params: dict[str, Any]
    ) -> Iterable[Sequence[Any]]:
        """Two statements (SQLite has no UPDATE inside a WITH), under the one
        write lock the transaction holds."""
        conn.execute(Q["renew_leases"], params)
        return conn.execute(Q["heartbeat"], params)

    def _moves(self, conn: sqlite3.Connection, moves: Sequence[Move]) -> dict[str, Any]:
        """Staged in ``staged_moves``, a table of the writing connection's own
        (created as it opens)."""
        conn.execute(Q["clear_staged_moves"])
        rows = move_rows(moves)
        start = 0
        while start < len(rows):
            size = min(STAGE_ROWS, 1 << (len(rows) - start).bit_length() - 1)
            chunk = rows[start : start + size]
            conn.execute(_stage_statement(size), [value for row in chunk for value in row])
            start += size
        return {}

    def _pairs(self, due: Sequence[tuple[int, int]]) -> dict[str, Any]:
        return {"pairs": json.dumps([list(pair) for pair in due])}

    def _before_commit(self, conn: sqlite3.Connection, wakes: set[Wake]) -> None:
        """Nothing to send: other processes see the commit through
        ``PRAGMA data_version``, and this one through the engine."""

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._conn.close()
            for reader in list(self._opened):
                reader.conn.close()

    def watch(self, listener: Callable[[Wake], None]) -> None:
        raise ConfigurationError(
            "SQLite has no notifications; other processes' commits show in "
            "PRAGMA data_version (store.supports_listen is False)"
        )

    def database_time(self) -> float:
        """SQLite lives on this machine: its clock is this machine's."""
        return time.time()

    def change_marker(self) -> int:
        """SQLite's data version, on the calling thread's own reading connection
        (no lock, a few microseconds): it changes with every commit of another
        connection, this store's writer included."""
        with self._read() as conn:
            return int(conn.execute(Q["data_version"]).fetchone()[0])


STAGE_ROWS = 64
"""Moves staged by one statement at most (``_stage_statement``)."""


@functools.cache
def _stage_statement(rows: int) -> str:
    """``stage_move`` for ``rows`` moves at once (a power of two, so that few
    texts come and each is prepared once).

    Rows bound one ``executemany`` step each: sqlite3 lets go of Python's GIL
    for every step and waits to take it back while the worker's other threads
    run Python (a def no-op burst on SQLite: 8 µs a move, against 3.7 alone);
    one statement for many rows waits once."""
    head, values = Q["stage_move"].split("VALUES")
    return f"{head}VALUES {', '.join([values.strip()] * rows)}"


def _split_statements(script: str) -> list[str]:
    """Migrations hold plain DDL; sqlite3.complete_statement finds where each ends."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    return statements
