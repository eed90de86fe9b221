"""The PostgreSQL store: many workers on many machines share one database.

Claims take a batch with ``FOR UPDATE SKIP LOCKED``; moves, events and lease
extensions are batched as on SQLite. Every commit that makes a job ready also
sends a NOTIFY, which a listening thread turns into an immediate wake-up of
this process's workers (polling stays as the fallback). Instar can live in
its own schema beside an application's tables (``?schema=instar``).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool

from instar.errors import ConfigurationError, DatabaseUnavailable
from instar.lifecycle import Kind, State, states_of_kind
from instar.models import Awakeable, Event, Job, QueueStats
from instar.store.contract import (
    BatchResult,
    ClaimRequest,
    Held,
    JobFilter,
    Move,
    NewJob,
    Note,
)
from instar.store.records import (
    awakeables_from,
    datetime_of,
    events_from,
    held_from,
    jobs_from,
    move_event,
    moves_json,
    new_job_record,
    note_params,
    refusal_note,
    rounds,
)
from instar.store.sql_blocks import load_blocks, load_migrations

log = logging.getLogger("instar.postgres")

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _sql_list(kind: Kind) -> str:
    return ", ".join(f"'{s.value}'" for s in sorted(states_of_kind(kind)))


Q = {
    name: sql.replace("{leased}", _sql_list(Kind.LEASED)).replace(
        "{terminal}", _sql_list(Kind.TERMINAL)
    )
    for name, sql in load_blocks("instar.store.postgres", "queries.sql").items()
}


class PostgresStore:
    supports_listen = True

    def __init__(self, url: str, *, pool_size: int = 4, connect_timeout: float = 10.0) -> None:
        self.conninfo, self.schema = _split_url(url)
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
        self._pool = ConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=pool_size,
            kwargs={"options": f"-c search_path={self.schema}"},
            open=False,
            name="instar",
            reconnect_timeout=300,
        )
        self._pool.open(wait=True, timeout=connect_timeout)
        self._marker = 0
        self._listeners: list[Callable[[], None]] = []
        self._closing = threading.Event()
        self._listener = threading.Thread(target=self._listen, name="instar-listen", daemon=True)
        self._listener.start()

    # -- plumbing ---------------------------------------------------------------

    @contextmanager
    def _tx(
        self, connection: psycopg.Connection[Any] | None = None
    ) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on a pooled connection, or the caller's own connection
        (transactional enqueue: it commits or rolls back with the caller's work)."""
        if connection is not None:
            # Our tables are in our schema: point the caller's search_path there for
            # these statements only, then give it back unchanged.
            previous = connection.execute(Q["current_search_path"]).fetchone()
            connection.execute(Q["set_local_search_path"], (self.schema,))
            try:
                yield connection
            finally:
                restore = previous[0] if previous else ""
                connection.execute(Q["set_local_search_path"], (restore,))
            return
        with self._pool.connection() as conn:
            yield conn

    def close(self) -> None:
        self._closing.set()
        try:
            with self._pool.connection() as conn:
                conn.execute(Q["notify"])  # wakes the listening thread so it can end now
        except psycopg.Error:
            pass  # the server is gone: the listener ends at its next timeout
        self._pool.close()
        self._listener.join(timeout=5)

    def watch(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (in the listening thread) when another process makes a job ready."""
        self._listeners = [*self._listeners, listener]

    def _listen(self) -> None:
        """LISTEN on a dedicated connection; reconnect with backoff when it drops."""
        delay = 0.1
        while not self._closing.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute(Q["listen"])
                    delay = 0.1
                    while not self._closing.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            if self._closing.is_set():
                                return
                            self._marker += 1
                            for listener in self._listeners:
                                listener()
            except psycopg.Error as exc:
                if self._closing.is_set():
                    return
                log.warning("listening for new jobs failed (%s); retrying in %.1fs", exc, delay)
                self._marker += 1  # wake pollers: something may have been missed
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def migrate(self) -> int:
        with psycopg.connect(self.conninfo, autocommit=False) as conn, conn.transaction():
            conn.execute(Q["migration_lock"])
            conn.execute(Q["create_schema"].replace("{schema}", self.schema))
            conn.execute(Q["set_local_search_path"], (self.schema,))
            conn.execute(Q["create_migrations_table"])
            done = {row[0] for row in conn.execute(Q["applied_migrations"])}
            version = max(done, default=0)
            for number, name, sql in load_migrations("instar.store.postgres.migrations"):
                if number in done:
                    continue
                conn.execute(sql)
                conn.execute(Q["record_migration"], {"version": number, "name": name})
                version = number
        return version

    # -- jobs -------------------------------------------------------------------

    def insert_jobs(
        self,
        jobs: Sequence[NewJob],
        now: float,
        actor: str | None,
        connection: Any = None,
    ) -> list[Job]:
        with self._tx(connection) as conn:
            if len(jobs) > 1 and all(j.key is None for j in jobs):
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
                    "now": now,
                }
                ids = [row[0] for row in conn.execute(Q["insert_jobs_bulk"], columns)]
                inserted = [True] * len(jobs)
            else:
                ids, inserted = [], []
                for job in jobs:
                    row = conn.execute(
                        Q["insert_job"],
                        (
                            job.name,
                            job.queue,
                            job.state.value,
                            job.priority,
                            job.max_attempts,
                            job.args_json,
                            job.key,
                            job.run_at,
                            job.lease_seconds,
                            job.pause_timeout,
                            job.parent_id,
                            now,
                            now,
                        ),
                    ).fetchone()
                    if row is not None:
                        ids.append(row[0])
                        inserted.append(True)
                    else:
                        existing = conn.execute(Q["job_by_key"], (job.key,)).fetchone()
                        assert existing is not None
                        ids.append(existing[0])
                        inserted.append(False)
            new_ids = [i for i, new in zip(ids, inserted, strict=True) if new]
            edges = [
                (job_id, parent, "after")
                for job_id, job, new in zip(ids, jobs, inserted, strict=True)
                if new
                for parent in job.after
            ]
            with conn.cursor() as cursor:
                if edges:
                    cursor.executemany(Q["add_dependency"], edges)
                cursor.execute(
                    Q["insert_events_enqueued"], {"now": now, "actor": actor, "ids": new_ids}
                )
            if any(j.state is State.READY for j in jobs):
                conn.execute(Q["notify"])
            if all(inserted):
                created = datetime_of(now)
                return [new_job_record(i, j, created) for i, j in zip(ids, jobs, strict=True)]
            found = jobs_from(conn.execute(Q["jobs_in"], (ids,)))
        by_id = {job.id: job for job in found}
        return [by_id[i] for i in ids]

    def get_job(self, job_id: int) -> Job | None:
        with self._tx() as conn:
            found = jobs_from(conn.execute(Q["get_job"], (job_id,)))
        return found[0] if found else None

    def list_jobs(self, where: JobFilter) -> list[Job]:
        params = {
            "state": None if where.state is None else where.state.value,
            "queue": where.queue,
            "name": where.name,
            "limit": where.limit,
        }
        with self._tx() as conn:
            return jobs_from(conn.execute(Q["list_jobs"], params))

    def count_by_state(self) -> dict[State, int]:
        with self._tx() as conn:
            rows = conn.execute(Q["count_by_state"]).fetchall()
        return {State(state): count for state, count in rows}

    def events(self, job_id: int) -> list[Event]:
        with self._tx() as conn:
            return events_from(conn.execute(Q["events_of_job"], (job_id,)))

    # -- state changes ----------------------------------------------------------

    def commit_batch(
        self,
        moves: Sequence[Move],
        notes: Sequence[Note],
        claim: ClaimRequest | None,
        now: float,
    ) -> BatchResult:
        claimed: list[Job] = []
        with self._tx() as conn:
            self._write_notes(conn, notes, now)
            applied = self._apply_moves(conn, moves, now)
            if claim is not None and claim.limit > 0:
                params = {
                    "worker": claim.worker,
                    "now": now,
                    "limit": claim.limit,
                    "queues": None if claim.queues is None else list(claim.queues),
                }
                claimed = sorted(
                    jobs_from(conn.execute(Q["claim"], params)), key=lambda j: (-j.priority, j.id)
                )
                if claimed:
                    with conn.cursor() as cursor:
                        cursor.executemany(
                            Q["insert_event"],
                            [
                                (
                                    j.id,
                                    now,
                                    "ready",
                                    "running",
                                    "claimed",
                                    j.attempt,
                                    claim.worker,
                                    None,
                                    None,
                                )
                                for j in claimed
                            ],
                        )
        return BatchResult(applied, claimed)

    def _write_notes(
        self, conn: psycopg.Connection[Any], notes: Sequence[Note], now: float
    ) -> None:
        if not notes:
            return
        with conn.cursor() as cursor:
            cursor.executemany(Q["insert_note"], [note_params(n, now) for n in notes])
            progress = [
                {"job_id": n.job_id, "progress": n.progress_json}
                for n in notes
                if n.progress_json is not None
            ]
            if progress:
                cursor.executemany(Q["set_progress"], progress)

    def _apply_moves(
        self, conn: psycopg.Connection[Any], moves: Sequence[Move], now: float
    ) -> list[bool]:
        """Apply moves in the open transaction, each with its event, in rounds of
        distinct jobs; a refused report from a stale lease leaves a note."""
        applied = [False] * len(moves)
        index = {id(move): i for i, move in enumerate(moves)}
        events = []
        refusals = []
        for round_ in rounds(moves):
            won = {
                row[0]
                for row in conn.execute(Q["move_batch"], {"moves": moves_json(round_), "now": now})
            }
            for move in round_:
                ok = move.job_id in won
                applied[index[id(move)]] = ok
                if ok:
                    events.append(move_event(move, now))
                elif move.guard_token is not None:
                    refusals.append(note_params(refusal_note(move), now))
        with conn.cursor() as cursor:
            if events:
                cursor.executemany(Q["insert_event"], events)
            if refusals:
                cursor.executemany(Q["insert_note"], refusals)
        if any(
            ok and move.to_state is State.READY for move, ok in zip(moves, applied, strict=True)
        ):
            conn.execute(Q["notify"])
        return applied

    def request_cancel_if_leased(self, job_id: int, now: float, actor: str | None) -> bool:
        return self._flag(Q["request_cancel"], "cancel-requested", job_id, now, actor)

    def request_pause_if_leased(self, job_id: int, now: float, actor: str | None) -> bool:
        return self._flag(Q["request_pause"], "pause-requested", job_id, now, actor)

    def _flag(self, sql: str, trigger: str, job_id: int, now: float, actor: str | None) -> bool:
        with self._tx() as conn:
            if conn.execute(sql, {"job_id": job_id, "now": now}).rowcount != 1:
                return False
            conn.execute(
                Q["insert_note"], note_params(Note(job_id, trigger, None, actor, None), now)
            )
        return True

    def heartbeat(self, worker: str, now: float) -> list[Held]:
        with self._tx() as conn:
            rows = conn.execute(Q["heartbeat"], {"worker": worker, "now": now}).fetchall()
        return [held_from(row) for row in rows]

    # -- durable execution ----------------------------------------------------------

    def steps(self, job_id: int) -> dict[str, str | None]:
        with self._tx() as conn:
            return dict(conn.execute(Q["steps_of_job"], (job_id,)).fetchall())

    def save_step(
        self, job_id: int, lease_token: str, name: str, result_json: str | None, now: float
    ) -> Held | None:
        params = {
            "job_id": job_id,
            "token": lease_token,
            "name": name,
            "now": now,
            "result": result_json,
        }
        with self._tx() as conn:
            conn.execute(Q["save_step"], params)
            row = conn.execute(Q["held"], {"job_id": job_id, "token": lease_token}).fetchone()
            if row is not None:
                note = Note(job_id, "step", None, None, json.dumps({"step": name}))
                conn.execute(Q["insert_note"], note_params(note, now))
        return None if row is None else held_from(row)

    def save_checkpoint(
        self, job_id: int, lease_token: str, data_json: str, now: float
    ) -> Held | None:
        params = {"job_id": job_id, "token": lease_token, "data": data_json, "now": now}
        with self._tx() as conn:
            row = conn.execute(Q["save_checkpoint"], params).fetchone()
            if row is not None:
                note = Note(job_id, "checkpoint", None, None, data_json)
                conn.execute(Q["insert_note"], note_params(note, now))
        return None if row is None else held_from(row)

    def awakeable(self, job_id: int, name: str, new_id: str, now: float) -> Awakeable:
        with self._tx() as conn:
            conn.execute(Q["create_awakeable"], (new_id, job_id, name, now))
            return awakeables_from(conn.execute(Q["awakeable_by_name"], (job_id, name)))[0]

    def get_awakeable(self, awakeable_id: str) -> Awakeable | None:
        with self._tx() as conn:
            found = awakeables_from(conn.execute(Q["awakeable_by_id"], (awakeable_id,)))
        return found[0] if found else None

    def set_awakeable_timeout(self, awakeable_id: str, timeout_at: float) -> None:
        with self._tx() as conn:
            conn.execute(Q["set_awakeable_timeout"], (timeout_at, awakeable_id))

    def settle_awakeable(
        self,
        awakeable_id: str,
        state: str,
        value_json: str | None,
        reason: str | None,
        wake: Move | None,
        now: float,
    ) -> bool:
        params = {
            "id": awakeable_id,
            "state": state,
            "value": value_json,
            "reason": reason,
            "now": now,
        }
        with self._tx() as conn:
            if conn.execute(Q["settle_awakeable"], params).rowcount != 1:
                return False
            if wake is not None:
                self._apply_moves(conn, [wake], now)
        return True

    def awakeables_of(self, job_id: int) -> list[Awakeable]:
        with self._tx() as conn:
            return awakeables_from(conn.execute(Q["awakeables_of_job"], (job_id,)))

    def add_dependencies(self, job_id: int, on: Sequence[int], kind: str) -> None:
        with self._tx() as conn, conn.cursor() as cursor:
            if kind == "join":
                cursor.execute(Q["remove_dependencies"], (job_id, kind))
            cursor.executemany(Q["add_dependency"], [(job_id, other, kind) for other in on])

    def remove_dependencies(self, job_id: int, kind: str) -> None:
        with self._tx() as conn:
            conn.execute(Q["remove_dependencies"], (job_id, kind))

    def dependencies_of(self, job_id: int, kind: str) -> list[Job]:
        with self._tx() as conn:
            return jobs_from(conn.execute(Q["dependencies_of"], (job_id, kind)))

    def waiting_on(self, job_ids: Sequence[int]) -> list[Job]:
        with self._tx() as conn:
            return jobs_from(conn.execute(Q["waiting_on"], (list(job_ids),)))

    def stranded_waiters(self, limit: int) -> list[Job]:
        with self._tx() as conn:
            return jobs_from(conn.execute(Q["stranded_waiters"], (limit,)))

    def children_of(self, job_id: int) -> list[Job]:
        with self._tx() as conn:
            return jobs_from(conn.execute(Q["children_of"], (job_id,)))

    def pause_queue(self, queue: str, now: float) -> bool:
        with self._tx() as conn:
            return conn.execute(Q["pause_queue"], (queue, now)).rowcount == 1

    def resume_queue(self, queue: str) -> bool:
        with self._tx() as conn:
            resumed = conn.execute(Q["resume_queue"], (queue,)).rowcount == 1
            conn.execute(Q["notify"])
        return resumed

    def queue_stats(self) -> list[QueueStats]:
        with self._tx() as conn:
            rows = conn.execute(Q["queue_counts"]).fetchall()
            paused = {row[0] for row in conn.execute(Q["paused_queues"])}
        counts: dict[str, dict[State, int]] = {queue: {} for queue in paused}
        for queue, state, count in rows:
            counts.setdefault(queue, {})[State(state)] = count
        return [QueueStats(q, q in paused, counts[q]) for q in sorted(counts)]

    # -- timers and maintenance ---------------------------------------------------

    def due_timers(self, now: float, limit: int) -> list[Job]:
        with self._tx() as conn:
            return jobs_from(conn.execute(Q["due_timers"], {"now": now, "limit": limit}))

    def expired_leases(self, now: float, limit: int) -> list[Job]:
        with self._tx() as conn:
            return jobs_from(conn.execute(Q["expired_leases"], {"now": now, "limit": limit}))

    def next_timer_at(self) -> float | None:
        with self._tx() as conn:
            row = conn.execute(Q["next_timer_at"]).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def try_lead(self, role: str, holder: str, now: float, ttl: float) -> bool:
        params = {"role": role, "holder": holder, "now": now, "ttl": ttl}
        with self._tx() as conn:
            return conn.execute(Q["try_lead"], params).rowcount == 1

    def change_marker(self) -> int:
        """Counts NOTIFYs received: changes when another process made a job ready."""
        return self._marker


def _split_url(url: str) -> tuple[str, str]:
    """The libpq URL without Instar's own ``schema`` option, and the schema."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    schema = query.pop("schema", "public")
    if not _IDENTIFIER.match(schema):
        raise ConfigurationError(
            f"schema {schema!r} in {url!r} is not a plain lower-case identifier; "
            "use letters, digits and underscores"
        )
    scheme = "postgresql"
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), "")), schema
