"""What both SQL backends do the same way, over their own named queries.

sqlite3 and psycopg connections answer ``execute``, ``cursor().executemany``,
``rowcount`` and ``fetchall`` alike, and each backend's ``queries.sql`` takes
the same parameters under the same block names. So the reads, the one
migration runner and every write of a transaction are written once here; a
backend supplies its queries, its connections, its claim and bulk insert,
and the little that differs (how a list is passed, how listeners are told).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from instar.lifecycle import JOBS, KINDS, Kind, State
from instar.models import (
    ApiToken,
    Awakeable,
    BulkRecord,
    Event,
    FlowLimitInfo,
    Job,
    QueueStats,
    ScheduleRecord,
)
from instar.payload import safe_text
from instar.store.contract import (
    Advance,
    Applied,
    ArgsMatch,
    ClaimRequest,
    EventFilter,
    Held,
    JobFilter,
    Lease,
    Move,
    NewJob,
    Note,
    PruningMarks,
    RateHold,
    Recheck,
    Renewal,
    Request,
    Scanned,
    Settlement,
    StateFlow,
    Term,
    Wake,
    WorkerInfo,
)
from instar.store.records import (
    awakeables_from,
    datetime_of,
    events_from,
    held_from,
    in_claim_order,
    jobs_from,
    new_job_record,
    note_params,
    recheck_from,
    rounds,
)
from instar.store.sql_blocks import load_migrations
from instar.store.sql_machines import MachineReadsSQL, MachineWritesSQL
from instar.vocabulary import AwakeableState, DependencyKind, Trigger


class SQLStore(MachineReadsSQL, ABC):
    """The shared body of the SQLite and PostgreSQL stores: reads and migrations.
    Writes live in ``SQLTransaction``."""

    Q: Mapping[str, str]
    migrations_package: str

    # -- what a backend supplies -------------------------------------------------

    @abstractmethod
    def _write(self, connection: Any = None, pipeline: bool = False) -> AbstractContextManager[Any]:
        """A connection inside one write transaction, committed on success."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Any]:
        """A connection for reads."""

    @abstractmethod
    def _migration(self) -> AbstractContextManager[Any]:
        """A connection inside the one transaction that migrates (others wait)."""

    @abstractmethod
    def _run_script(self, conn: Any, sql: str) -> None:
        """Run one migration file."""

    @abstractmethod
    def _claim(self, conn: Any, claim: ClaimRequest, now: float) -> Any:
        """Run the backend's claim statement; returns a cursor over the claimed rows."""

    @abstractmethod
    def _insert_rows(
        self, conn: Any, jobs: Sequence[NewJob], now: float, actor: str | None
    ) -> list[int | None]:
        """Insert job rows and the first event of each new one; the new ids in
        order, None where a key already existed."""

    def _first_events(self, conn: Any, ids: Sequence[int], now: float, actor: str | None) -> None:
        """The ``enqueued`` event of each of these new jobs, in one statement."""
        if ids:
            params = {
                "ids": self._sql_list(ids),
                "now": now,
                "actor": actor,
                "trigger": Trigger.ENQUEUED.value,
            }
            conn.execute(self.Q["insert_enqueued_events"], params)

    @abstractmethod
    def _sql_list(self, ids: Sequence[int] | Sequence[str]) -> Any:
        """A list of ids or names as the backend's SQL takes it (a JSON text, an array)."""

    @abstractmethod
    def _heartbeat(self, conn: Any, params: dict[str, Any]) -> Iterable[Sequence[Any]]:
        """Run ``Transaction.heartbeat`` (``params``: worker, now, ids, share, margin);
        returns its rows: id, state, cancel_requested, pause_requested."""

    @abstractmethod
    def _moves(self, conn: Any, moves: Sequence[Move]) -> dict[str, Any]:
        """The parameters through which ``move_batch``, ``insert_move_events`` and
        ``insert_refusals`` read ``moves`` (``records.move_rows``), on ``conn``
        inside its transaction. Raises ``ValueError`` for data no database takes."""

    @abstractmethod
    def args_path(self, match: ArgsMatch) -> Any:
        """``match``'s path as the backend's JSON operator takes it."""

    @abstractmethod
    def _before_commit(self, conn: Any, wakes: set[Wake]) -> None:
        """Tell other processes what this transaction did, if the backend must."""

    # -- the one migration runner ----------------------------------------------------

    def migrate(self) -> int:
        with self._migration() as conn:
            conn.execute(self.Q["create_migrations_table"])
            done = {row[0] for row in conn.execute(self.Q["applied_migrations"])}
            version = max(done, default=0)
            for number, name, sql in load_migrations(self.migrations_package):
                if number in done:
                    continue
                self._run_script(conn, sql)
                conn.execute(self.Q["record_migration"], {"version": number, "name": name})
                version = number
        return version

    def schema_version(self) -> tuple[int, int]:
        want = max((number for number, _, _ in load_migrations(self.migrations_package)), default=0)
        with self._read() as conn:
            if not conn.execute(self.Q["migrations_table_exists"]).fetchone()[0]:
                return 0, want
            row = conn.execute(self.Q["schema_version"]).fetchone()
        return (0 if row is None or row[0] is None else int(row[0])), want

    # -- writes -------------------------------------------------------------------

    @contextmanager
    def transaction(
        self, now: float, connection: Any = None, *, pipeline: bool = False
    ) -> Iterator[SQLTransaction]:
        with self._write(connection, pipeline) as conn:
            tx = SQLTransaction(self, conn, now)
            yield tx
            if tx.wakes():
                self._before_commit(conn, tx.wakes())

    def advance_one(self, advance: Advance, now: float) -> bool:
        with self.transaction(now) as tx:
            return tx.advance_instance(advance)

    def claim_alone(
        self, claim: ClaimRequest, recheck: Sequence[int], now: float
    ) -> tuple[list[Job], list[Recheck]]:
        with self.transaction(now, pipeline=True) as tx:
            rechecked = tx.recheck(claim.worker, recheck) if recheck else []
            return tx.claim(claim), rechecked

    def apply_alone(self, moves: Sequence[Move], now: float) -> list[bool]:
        """Every move is left to the caller's transaction: where one writer at a
        time commits (SQLite), a transaction of one statement costs what the
        statement alone would."""
        return [False] * len(moves)

    # -- reads: jobs ------------------------------------------------------------------

    def get_job(self, job_id: int) -> Job | None:
        with self._read() as conn:
            found = jobs_from(conn.execute(self.Q["get_job"], (job_id,)))
        return found[0] if found else None

    def list_jobs(self, where: JobFilter) -> list[Job]:
        params = {
            "state": None if where.state is None else where.state.value,
            "queue": where.queue,
            "name": where.name,
            "limit": where.limit,
            "before": where.before_id,
            "parent": where.parent_id,
            "created_after": where.created_after,
            "created_before": where.created_before,
            "args_path": None,
            "args_text": None,
            "args_literal": None,
        }
        if where.args is not None:
            params["args_path"] = self.args_path(where.args)
            params["args_text"], params["args_literal"] = where.args.candidates()
        with self._read() as conn:
            return jobs_from(conn.execute(self.Q["list_jobs"], params))

    def count_by_state(self) -> dict[State, int]:
        with self._read() as conn:
            rows = conn.execute(self.Q["count_by_state"]).fetchall()
        return {State(state): count for state, count in rows}

    def count_matching(self, queue: str | None, name: str | None, until: int) -> dict[State, int]:
        params = {"queue": queue, "name": name, "until": until}
        with self._read() as conn:
            rows = conn.execute(self.Q["count_matching"], params).fetchall()
        return {State(state): count for state, count in rows}

    def last_job_id(self) -> int:
        with self._read() as conn:
            return int(conn.execute(self.Q["last_job_id"]).fetchone()[0])

    def queue_stats(self) -> list[QueueStats]:
        with self._read() as conn:
            rows = conn.execute(self.Q["queue_counts"]).fetchall()
            paused = {row[0] for row in conn.execute(self.Q["paused_queues"])}
        counts: dict[str, dict[State, int]] = {queue: {} for queue in paused}
        for queue, state, count in rows:
            counts.setdefault(queue, {})[State(state)] = count
        oldest = self.oldest_ready()
        return [QueueStats(q, q in paused, counts[q], oldest.get(q)) for q in sorted(counts)]

    def children_of(self, job_id: int) -> list[Job]:
        with self._read() as conn:
            return jobs_from(conn.execute(self.Q["children_of"], (job_id,)))

    def dependencies_of(self, job_id: int, kind: DependencyKind) -> list[Job]:
        with self._read() as conn:
            return jobs_from(conn.execute(self.Q["dependencies_of"], (job_id, kind.value)))

    # -- reads: the timeline --------------------------------------------------------------

    def events(self, job_id: int, after: int = 0, limit: int | None = None) -> list[Event]:
        params = {"job_id": job_id, "after": after, "limit": limit}
        with self._read() as conn:
            return events_from(conn.execute(self.Q["events_of_job"], params))

    def moves_at(self, job_ids: Sequence[int], at: float) -> list[Event]:
        params = {"ids": self._sql_list(job_ids), "at": at}
        with self._read() as conn:
            return events_from(conn.execute(self.Q["moves_at"], params))

    def events_since(self, after_id: int, limit: int, where: EventFilter) -> list[Event]:
        params = {
            "after": after_id,
            "limit": limit,
            "job_id": where.job_id,
            "queue": where.queue,
            "name": where.name,
            "state": None if where.state is None else where.state.value,
        }
        query = "events_of_job_since" if where.job_id is not None else "events_since"
        with self._read() as conn:
            return events_from(conn.execute(self.Q[query], params))

    def last_event_id(self) -> int:
        with self._read() as conn:
            row = conn.execute(self.Q["last_event_id"]).fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def held_back_events(self) -> bool:
        with self._read() as conn:
            return bool(conn.execute(self.Q["held_back_events"]).fetchone()[0])

    # -- reads: durable state -------------------------------------------------------------

    def steps(self, job_id: int) -> dict[str, str | None]:
        with self._read() as conn:
            return dict(conn.execute(self.Q["steps_of_job"], (job_id,)).fetchall())

    def get_awakeable(self, awakeable_id: str) -> Awakeable | None:
        with self._read() as conn:
            found = awakeables_from(conn.execute(self.Q["awakeable_by_id"], (awakeable_id,)))
        return found[0] if found else None

    def awakeables_of(self, job_id: int) -> list[Awakeable]:
        with self._read() as conn:
            return awakeables_from(conn.execute(self.Q["awakeables_of_job"], (job_id,)))

    def awakeables_in_state(
        self, state: AwakeableState, limit: int, queue: str | None = None
    ) -> list[Awakeable]:
        params = {"state": state.value, "limit": limit, "queue": queue}
        with self._read() as conn:
            return awakeables_from(conn.execute(self.Q["awakeables_in_state"], params))

    # -- reads: what maintenance sweeps ----------------------------------------------------

    def due_timers(self, now: float, limit: int) -> list[Job]:
        return self._sweep("due_timers", {"now": now, "limit": limit})

    def expired_pauses(self, now: float, limit: int) -> list[Job]:
        return self._sweep("expired_pauses", {"now": now, "limit": limit})

    def expired_leases(self, now: float, limit: int) -> list[Job]:
        return self._sweep("expired_leases", {"now": now, "limit": limit})

    # -- flow control ----------------------------------------------------------------------

    def declare_flow_limits(
        self, limits: Sequence[FlowLimitInfo], names: Sequence[str], now: float
    ) -> None:
        queues = [limit.name for limit in limits if limit.kind == "queue"]
        with self._write() as conn:
            params = {"queues": self._sql_list(queues), "names": self._sql_list(names)}
            conn.execute(self.Q["forget_declared_limits"], params)
            for limit in limits:
                row = {
                    "kind": limit.kind,
                    "name": limit.name,
                    "concurrency": limit.concurrency,
                    "key": limit.key,
                    "rate_count": limit.rate_count,
                    "rate_per": limit.rate_per,
                    "rate_key": limit.rate_key,
                    "now": now,
                }
                conn.execute(self.Q["declare_limit"], row)

    def flow_limits(self) -> list[FlowLimitInfo]:
        with self._read() as conn:
            rows = conn.execute(self.Q["flow_limits"]).fetchall()
        return [FlowLimitInfo(*row) for row in rows]

    def rate_hold(self, now: float, since: float) -> RateHold:
        with self._read() as conn:
            row = conn.execute(self.Q["rate_hold"], {"now": now, "since": since}).fetchone()
        if row is None:
            return RateHold(None, False)
        return RateHold(None if row[0] is None else float(row[0]), bool(row[1]))

    def forget_rates(self, before: float, limit: int) -> int:
        with self._write() as conn:
            params = {"before": before, "limit": limit}
            return int(conn.execute(self.Q["forget_rates"], params).rowcount)

    def claimed_by(self, worker: str) -> list[Job]:
        return self._sweep("claimed_by", {"worker": worker})

    def stranded_waiters(self, limit: int) -> list[Job]:
        return self._sweep("stranded_waiters", {"limit": limit})

    def unwakeable(self, limit: int) -> list[Job]:
        return self._sweep("unwakeable", {"limit": limit})

    def _sweep(self, query: str, params: dict[str, Any]) -> list[Job]:
        with self._read() as conn:
            return jobs_from(conn.execute(self.Q[query], params))

    def next_timer_at(self) -> float | None:
        with self._read() as conn:
            row = conn.execute(self.Q["next_timer_at"]).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    # -- leadership ------------------------------------------------------------------------

    def try_lead(self, term: Term, now: float) -> bool:
        params = {"role": term.role, "holder": term.holder, "now": now, "ttl": term.ttl}
        with self._write() as conn:
            return bool(conn.execute(self.Q["try_lead"], params).rowcount == 1)

    def resign(self, term: Term) -> None:
        with self._write() as conn:
            conn.execute(self.Q["resign"], {"role": term.role, "holder": term.holder})

    # -- workers ---------------------------------------------------------------------------

    def live_workers(self, seen_since: float) -> list[WorkerInfo]:
        with self._read() as conn:
            rows = conn.execute(self.Q["live_workers"], {"since": seen_since}).fetchall()
        return [
            WorkerInfo(
                id=row[0],
                host=row[1],
                pid=row[2],
                concurrency=row[3],
                queues=None if row[4] is None else tuple(json.loads(row[4])),
                handlers=tuple(json.loads(row[5])),
                started_at=row[6],
                seen_at=row[7],
            )
            for row in rows
        ]

    # -- state counts and flows -----------------------------------------------------------

    def live_counts(self) -> list[tuple[str, State, int]]:
        with self._read() as conn:
            rows = conn.execute(LIVE_COUNTS).fetchall()
        return [(queue, State(state), count) for queue, state, count in rows]

    def finished_totals(self) -> list[tuple[str, State, int]]:
        with self._read() as conn:
            rows = conn.execute(self.Q["finished_totals"]).fetchall()
        return [(queue, State(state), int(count)) for queue, state, count in rows if count]

    def finished_entered(self) -> list[tuple[str, State, int]]:
        with self._read() as conn:
            rows = conn.execute(self.Q["finished_entered"]).fetchall()
        return [(queue, State(state), int(count)) for queue, state, count in rows]

    def oldest_ready(self) -> dict[str, float]:
        with self._read() as conn:
            rows = conn.execute(self.Q["oldest_ready"]).fetchall()
        return {queue: float(at) for queue, at in rows}

    def flows_since(self, since: float) -> list[StateFlow]:
        with self._read() as conn:
            rows = conn.execute(self.Q["flows_since"], {"since": since}).fetchall()
        return [StateFlow(row[0], row[1], State(row[2]), row[3], row[4]) for row in rows]

    def rollup_cursor(self, name: str) -> int:
        with self._read() as conn:
            row = conn.execute(self.Q["rollup_cursor"], {"name": name}).fetchone()
        return 0 if row is None else int(row[0])

    def prune_scan(self, after_id: int, limit: int) -> list[Scanned]:
        with self._read() as conn:
            rows = conn.execute(self.Q["prune_scan"], {"after": after_id, "limit": limit})
            return [
                Scanned(int(r[0]), r[1], r[2], State(r[3]), float(r[4]), float(r[5]), int(r[6]))
                for r in rows.fetchall()
            ]

    def pruning_marks(self) -> PruningMarks:
        with self._read() as conn:
            cursor, through = conn.execute(self.Q["pruning_marks"]).fetchone()
        return PruningMarks(int(cursor), int(through))

    def prune(
        self,
        due: Sequence[tuple[int, int]],
        cursor: int | None,
        rolled_up_to: int,
        *,
        dry_run: bool = False,
    ) -> list[tuple[str, State]]:
        try:
            return self._prune(due, cursor, rolled_up_to, dry_run)
        except _RolledBack as dry:
            return dry.pruned

    def _prune(
        self, due: Sequence[tuple[int, int]], cursor: int | None, rolled_up_to: int, dry_run: bool
    ) -> list[tuple[str, State]]:
        with self._write() as conn:
            _, through = conn.execute(self.Q["lock_pruning"]).fetchone()
            pruned: list[tuple[str, State]] = []
            if due:
                params = {**self._pairs(due), "rolled_up_to": rolled_up_to}
                rows = conn.execute(self.Q["prune_jobs"], params).fetchall()
                if rows:
                    ids = self._sql_list([int(row[0]) for row in rows])
                    events = conn.execute(self.Q["prune_events"], (ids,)).fetchall()
                    through = max([int(through), *(int(e[0]) for e in events)])
                    for query in ("prune_steps", "prune_awakeables", "prune_edges"):
                        conn.execute(self.Q[query], (ids,))
                    pruned = [(row[1], State(row[2])) for row in rows]
                    counted = Counter(pruned)
                    conn.cursor().executemany(
                        self.Q["count_pruned"],
                        [
                            {"queue": q, "state": s.value, "pruned": n}
                            for (q, s), n in counted.items()
                        ],
                    )
            if dry_run:
                raise _RolledBack(pruned)
            marks = {"cursor": cursor, "through": int(through)}
            conn.execute(self.Q["mark_pruning"], marks)
            return pruned

    @abstractmethod
    def _pairs(self, due: Sequence[tuple[int, int]]) -> dict[str, Any]:
        """``(id, version)`` pairs as ``prune_jobs`` takes them."""

    def roll_up(self, name: str, limit: int) -> int:
        with self._write() as conn:
            conn.execute(self.Q["start_rollup"], {"name": name})
            after = int(conn.execute(self.Q["lock_rollup"], {"name": name}).fetchone()[0])
            last, count = self._roll_up(conn, after, limit)
            if count:
                params = {"name": name, "from": after, "to": last}
                conn.execute(self.Q["advance_rollup"], params)
            return count

    @abstractmethod
    def _roll_up(self, conn: Any, after: int, limit: int) -> tuple[int, int]:
        """Count the next ``limit`` events after ``after`` into the flows and
        totals; (the last event id counted, how many)."""

    # -- the HTTP API's tokens and keys ----------------------------------------------------

    def add_token(self, token: ApiToken) -> bool:
        params = {
            "name": token.name,
            "digest": token.digest,
            "scopes": ",".join(sorted(token.scopes)),
            "queue": token.queue,
            "now": token.created_at,
        }
        with self._write() as conn:
            return bool(conn.execute(self.Q["add_token"], params).rowcount == 1)

    def token_by_digest(self, digest: str) -> ApiToken | None:
        with self._read() as conn:
            rows = conn.execute(self.Q["token_by_digest"], {"digest": digest}).fetchall()
        return _token(rows[0]) if rows else None

    def tokens(self) -> list[ApiToken]:
        with self._read() as conn:
            return [_token(row) for row in conn.execute(self.Q["tokens"]).fetchall()]

    def revoke_token(self, name: str, now: float) -> bool:
        with self._write() as conn:
            params = {"name": name, "now": now}
            return bool(conn.execute(self.Q["revoke_token"], params).rowcount == 1)

    def key(self, name: str, make: Callable[[], str]) -> str:
        with self._read() as conn:
            rows = conn.execute(self.Q["key"], {"name": name}).fetchall()
        if rows:
            return str(rows[0][0])
        with self._write() as conn:
            conn.execute(self.Q["add_key"], {"name": name, "value": make()})
            # Another process may have stored its own first: this one wins for all.
            return str(conn.execute(self.Q["key"], {"name": name}).fetchone()[0])

    # -- periodic jobs -------------------------------------------------------------

    def schedules(self) -> list[ScheduleRecord]:
        with self._read() as conn:
            return [_schedule(row) for row in conn.execute(self.Q["schedules"]).fetchall()]

    def schedule_seen(
        self, name: str, expression: str, tz: str, first_slot: float, now: float
    ) -> ScheduleRecord:
        params = {
            "name": name,
            "expression": expression,
            "tz": tz,
            "first_slot": first_slot,
            "now": now,
        }
        with self._write() as conn:
            return _schedule(conn.execute(self.Q["schedule_seen"], params).fetchone())

    def advance_schedule(self, name: str, last_slot: float, last_job_id: int | None) -> None:
        params = {"name": name, "last_slot": last_slot, "last_job_id": last_job_id}
        with self._write() as conn:
            conn.execute(self.Q["advance_schedule"], params)

    def pause_schedule(self, name: str, paused: bool) -> bool:
        with self._write() as conn:
            params = {"name": name, "paused": paused}
            return bool(conn.execute(self.Q["pause_schedule"], params).rowcount == 1)

    # -- the HTTP API's bulk operations ---------------------------------------------

    def add_bulk(self, bulk: BulkRecord, forget_before: float) -> None:
        params = {
            "id": bulk.id,
            "spec": bulk.spec,
            "progress": bulk.progress,
            "owner": bulk.owner,
            "now": bulk.created_at,
        }
        with self._write() as conn:
            conn.execute(self.Q["forget_bulks"], {"before": forget_before})
            conn.execute(self.Q["add_bulk"], params)

    def bulk(self, bulk_id: str) -> BulkRecord | None:
        with self._read() as conn:
            rows = conn.execute(self.Q["bulk"], {"id": bulk_id}).fetchall()
        return _bulk(rows[0]) if rows else None

    def save_bulk(self, bulk_id: str, owner: str, progress: str, done: bool, now: float) -> bool:
        params = {"id": bulk_id, "owner": owner, "progress": progress, "done": done, "now": now}
        with self._write() as conn:
            return bool(conn.execute(self.Q["save_bulk"], params).rowcount == 1)

    def take_bulks(self, owner: str, now: float, quiet_since: float) -> list[BulkRecord]:
        params = {"owner": owner, "now": now, "quiet_since": quiet_since}
        with self._write() as conn:
            return [_bulk(row) for row in conn.execute(self.Q["take_bulks"], params).fetchall()]


def _live_counts() -> str:
    leased = [s for s in JOBS.states if KINDS[s] is Kind.LEASED]
    listed = ", ".join(f"'{s.value}'" for s in leased)
    parts = [
        f"SELECT queue || '' AS q, state, count(*) FROM jobs WHERE state IN ({listed}) "
        "GROUP BY q, state"
    ]
    parts += [
        f"SELECT queue || '' AS q, '{state.value}', count(*) FROM jobs "
        f"WHERE state = '{state.value}' GROUP BY q"
        for state in JOBS.states
        if state not in JOBS.final and state not in leased
    ]
    return "\nUNION ALL\n".join(parts)


LIVE_COUNTS = _live_counts()
"""Jobs in each live state by queue: one query per partial index, each with
the exact predicate of that index (the leased states share one), so that each
reads only its jobs (built from the lifecycle table: a new live state is
counted too). The queue is grouped as an expression: grouped as the column,
SQLite walks the whole (queue, id) index instead (1.7 s for 1,000,000
finished jobs, against 2 ms)."""


class _RolledBack(Exception):
    """Raised inside a dry run's transaction so that it rolls back, carrying
    what the run found."""

    def __init__(self, pruned: list[tuple[str, State]]) -> None:
        super().__init__("dry run")
        self.pruned = pruned


def _schedule(row: Sequence[Any]) -> ScheduleRecord:
    return ScheduleRecord(
        name=row[0],
        expression=row[1],
        tz=row[2],
        paused=bool(row[3]),
        last_slot=row[4],
        last_job_id=row[5],
        seen_at=row[6],
    )


def _bulk(row: Sequence[Any]) -> BulkRecord:
    return BulkRecord(
        id=row[0],
        spec=row[1],
        progress=row[2],
        done=bool(row[3]),
        owner=row[4],
        created_at=row[5],
        heartbeat_at=row[6],
    )


def _token(row: Sequence[Any]) -> ApiToken:
    return ApiToken(
        name=row[0],
        digest=row[1],
        scopes=frozenset(row[2].split(",")) if row[2] else frozenset(),
        queue=row[3],
        created_at=row[4],
        revoked_at=row[5],
    )


class SQLTransaction(MachineWritesSQL):
    """Every write of one transaction, on one connection, at one time ``now``."""

    def __init__(self, store: SQLStore, conn: Any, now: float) -> None:
        self.store = store
        self.Q = store.Q
        self.conn = conn
        self.now = now
        self._wakes: set[Wake] = set()
        self._moved: set[int] = set()
        self.observed = False  # the engine says so when someone listens to its moves
        self.after_commit: list[Callable[[], None]] = []

    def wakes(self) -> set[Wake]:
        return self._wakes

    def moved(self) -> set[int]:
        return self._moved

    def _appended(self, ready: bool = False, moved: Iterable[int] = ()) -> None:
        self._wakes.add(Wake.EVENTS)
        if ready:
            self._wakes.add(Wake.READY)
        if self.observed:
            self._moved.update(moved)

    # -- jobs ----------------------------------------------------------------------------

    def insert_jobs(self, jobs: Sequence[NewJob], actor: str | None) -> list[Job]:
        conn, now = self.conn, self.now
        actor = None if actor is None else safe_text(actor)
        ids = self.store._insert_rows(conn, jobs, now, actor)
        new = [(job_id, job) for job_id, job in zip(ids, jobs, strict=True) if job_id is not None]
        edges = [
            (job_id, parent, DependencyKind.AFTER.value)
            for job_id, job in new
            for parent in job.after
        ]
        if edges:
            conn.cursor().executemany(self.Q["add_dependency"], edges)
        if new:
            ready = any(job.state is State.READY for _, job in new)
            self._appended(ready, (job_id for job_id, _ in new))
        if len(new) == len(jobs):
            created = datetime_of(now)
            return [new_job_record(job_id, job, created) for job_id, job in new]
        existing = [
            self._job_by_key(job.key) if job_id is None else job_id
            for job_id, job in zip(ids, jobs, strict=True)
        ]
        found = jobs_from(conn.execute(self.Q["jobs_in"], (self.store._sql_list(existing),)))
        by_id = {job.id: job for job in found}
        return [by_id[i] for i in existing]

    def _job_by_key(self, key: str | None) -> int:
        row = self.conn.execute(self.Q["job_by_key"], (key,)).fetchone()
        assert row is not None, "a key that conflicted must exist"
        return int(row[0])

    def apply_moves(self, moves: Sequence[Move]) -> Applied:
        """In rounds of distinct jobs (one UPDATE per round); a refused report
        from a stale lease leaves a note instead of its event."""
        if not moves:
            return Applied([], frozenset())
        conn, now = self.conn, self.now
        won = [False] * len(moves)
        awaited: set[int] = set()
        index = {id(move): i for i, move in enumerate(moves)}
        for round_ in rounds(moves):
            # One UPDATE per round; the events of the moves that won, and the notes
            # of reports refused for a stale lease, set-based from the same JSON.
            params = self.store._moves(conn, round_)
            params.update(now=now, refused=Trigger.REFUSED.value, alone=False)
            rows = conn.execute(self.Q["move_batch"], params).fetchall()
            winners = [row[0] for row in rows]
            awaited.update(row[0] for row in rows if row[1])
            params["won"] = self.store._sql_list(winners)
            if winners:
                conn.execute(self.Q["insert_move_events"], params)
            if len(winners) < len(round_) and any(m.guard_token for m in round_):
                conn.execute(self.Q["insert_refusals"], params)
            taken = set(winners)
            if self.observed:
                self._moved.update(taken)
            for move in round_:
                won[index[id(move)]] = move.job_id in taken
        ready = any(ok and m.to_state is State.READY for m, ok in zip(moves, won, strict=True))
        self._appended(ready)
        return Applied(won, frozenset(awaited))

    def claim(self, request: ClaimRequest) -> list[Job]:
        if request.limit <= 0:
            return []
        claimed = in_claim_order(jobs_from(self.store._claim(self.conn, request, self.now)))
        if claimed:
            params = {
                "ids": self.store._sql_list([j.id for j in claimed]),
                "now": self.now,
                "trigger": Trigger.CLAIMED.value,
            }
            self.conn.execute(self.Q["insert_claim_events"], params)
            self._appended(moved=(j.id for j in claimed))
            if request.limits is not None and request.limits.fastest_interval is not None:
                jobs, queues = request.limits.as_json()
                rates = {"jobs": jobs, "queues": queues, "now": self.now}
                rates["ids"] = self.store._sql_list([j.id for j in claimed])
                self.conn.execute(self.Q["advance_rates"], rates)
        return claimed

    def raise_request(
        self, job_id: int, request: Request, actor: str | None, detail_json: str | None = None
    ) -> bool:
        query, trigger = {
            Request.CANCEL: ("request_cancel", Trigger.CANCEL_REQUESTED),
            Request.PAUSE: ("request_pause", Trigger.PAUSE_REQUESTED),
        }[request]
        if self.conn.execute(self.Q[query], {"job_id": job_id, "now": self.now}).rowcount != 1:
            return False
        self.append_notes([Note(job_id, trigger.value, None, actor, detail_json)])
        return True

    def heartbeat(self, worker: str, job_ids: Sequence[int], renewal: Renewal) -> list[Held]:
        self.conn.execute(self.Q["worker_seen"], {"id": worker, "now": self.now})
        if not job_ids:
            return []
        params = {
            "worker": worker,
            "now": self.now,
            "ids": self.store._sql_list(job_ids),
            "share": renewal.share,
            "margin": renewal.margin,
        }
        return [held_from(row) for row in self.store._heartbeat(self.conn, params)]

    def recheck(self, worker: str, job_ids: Sequence[int]) -> list[Recheck]:
        if not job_ids:
            return []
        params = {"worker": worker, "ids": self.store._sql_list(job_ids)}
        return [recheck_from(row) for row in self.conn.execute(self.Q["recheck"], params)]

    def register_worker(self, worker: WorkerInfo) -> None:
        params = {
            "id": worker.id,
            "host": safe_text(worker.host, 255),
            "pid": worker.pid,
            "concurrency": worker.concurrency,
            "queues": None if worker.queues is None else json.dumps(list(worker.queues)),
            "handlers": json.dumps(list(worker.handlers)),
            "now": self.now,
        }
        self.conn.execute(self.Q["register_worker"], params)

    def unregister_worker(self, worker_id: str) -> None:
        self.conn.execute(self.Q["unregister_worker"], {"id": worker_id})

    def forget_workers(self, unseen_since: float) -> int:
        cursor = self.conn.execute(self.Q["forget_workers"], {"since": unseen_since})
        return int(cursor.rowcount)

    def lock_job(self, job_id: int) -> Job | None:
        found = jobs_from(self.conn.execute(self.Q["lock_job"], (job_id,)))
        return found[0] if found else None

    def waiting_on(self, job_ids: Sequence[int]) -> list[Job]:
        return jobs_from(self.conn.execute(self.Q["waiting_on"], (self.store._sql_list(job_ids),)))

    def awaited(self, job_id: int, kind: DependencyKind, *, share_lock: bool = False) -> list[Job]:
        query = "awaited_locked" if share_lock else "dependencies_of"
        return jobs_from(self.conn.execute(self.Q[query], (job_id, kind.value)))

    def pause_queue(self, queue: str) -> bool:
        return bool(self.conn.execute(self.Q["pause_queue"], (queue, self.now)).rowcount == 1)

    def resume_queue(self, queue: str) -> bool:
        resumed = bool(self.conn.execute(self.Q["resume_queue"], (queue,)).rowcount == 1)
        self._wakes.add(Wake.READY)
        return resumed

    # -- the timeline ------------------------------------------------------------------------

    def append_notes(self, notes: Sequence[Note]) -> None:
        if not notes:
            return
        now = self.now
        events = [note_params(n, now) for n in notes if n.in_timeline]
        if events:
            self.conn.cursor().executemany(self.Q["insert_note"], events)
            self._appended()
        progress = [
            {"job_id": n.job_id, "progress": n.progress_json}
            for n in notes
            if n.progress_json is not None
        ]
        if progress:
            self.conn.cursor().executemany(self.Q["set_progress"], progress)

    # -- durable state ----------------------------------------------------------------------

    def save_step(self, lease: Lease, name: str, result_json: str | None) -> Held | None:
        params = {
            "job_id": lease.job_id,
            "token": lease.token,
            "name": name,
            "now": self.now,
            "result": result_json,
        }
        self.conn.execute(self.Q["save_step"], params)
        row = self.conn.execute(
            self.Q["held"], {"job_id": lease.job_id, "token": lease.token}
        ).fetchone()
        if row is None:
            return None
        note = Note(
            lease.job_id, Trigger.STEP.value, lease.worker, None, json.dumps({"step": name})
        )
        self.append_notes([note])
        return held_from(row)

    def save_checkpoint(self, lease: Lease, data_json: str) -> Held | None:
        params = {"job_id": lease.job_id, "token": lease.token, "data": data_json, "now": self.now}
        row = self.conn.execute(self.Q["save_checkpoint"], params).fetchone()
        if row is None:
            return None
        self.append_notes(
            [Note(lease.job_id, Trigger.CHECKPOINT.value, lease.worker, None, data_json)]
        )
        return held_from(row)

    def awakeable(self, job_id: int, name: str, new_id: str) -> Awakeable:
        self.conn.execute(self.Q["create_awakeable"], (new_id, job_id, name, self.now))
        return awakeables_from(self.conn.execute(self.Q["awakeable_by_name"], (job_id, name)))[0]

    def get_awakeable(self, awakeable_id: str) -> Awakeable | None:
        found = awakeables_from(self.conn.execute(self.Q["awakeable_by_id"], (awakeable_id,)))
        return found[0] if found else None

    def set_awakeable_timeout(self, awakeable_id: str, timeout_at: float) -> None:
        self.conn.execute(self.Q["set_awakeable_timeout"], (timeout_at, awakeable_id))

    def settle_awakeable(self, settlement: Settlement) -> bool:
        params = {
            "id": settlement.awakeable_id,
            "state": settlement.state.value,
            "value": settlement.value_json,
            "reason": settlement.reason,
            "now": self.now,
        }
        return bool(self.conn.execute(self.Q["settle_awakeable"], params).rowcount == 1)

    def add_dependencies(self, job_id: int, on: Sequence[int], kind: DependencyKind) -> None:
        edges = [(job_id, other, kind.value) for other in on]
        if edges:
            self.conn.cursor().executemany(self.Q["add_dependency"], edges)

    def remove_dependencies(self, job_ids: Sequence[int], kind: DependencyKind) -> None:
        if job_ids:
            self.conn.execute(
                self.Q["remove_dependencies"], (self.store._sql_list(job_ids), kind.value)
            )
