"""The only writer of job state.

Every write in Instar comes through ``Engine``: a worker's reports and
claims, an operator's verbs (``instar.engine.verbs``), a handler's durable
operations (through its context), maintenance's timers and rescues. Each
call is one store transaction holding the whole logical change: the moves
(each checked by ``plan_move`` against the lifecycle table before it gets
here), their events, the bookkeeping they imply and the moves they set off
(``instar.engine.waiting``). Listeners hear of it once it has committed.
The one exception: a worker's reports with nothing else to write, where each
move that sets off nothing is a whole change of its own and may commit alone
(``Engine.exchange``, ``Store.apply_alone``).
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from instar.clock import Clock, DatabaseClock
from instar.engine.moves import plan_move
from instar.engine.reads import Reader
from instar.engine.waiting import consequences, release, sets_off_nothing, start_or_fail
from instar.errors import InvalidTransition, SignalAlreadySettled
from instar.lifecycle import ENTRY_STATES, State
from instar.models import Awakeable, Job
from instar.store.contract import (
    Applied,
    ClaimRequest,
    Held,
    Lease,
    Move,
    NewJob,
    Note,
    Recheck,
    Renewal,
    Request,
    Settlement,
    Store,
    Term,
    Transaction,
    Wake,
    WorkerInfo,
)
from instar.vocabulary import Trigger

_CASCADE_LIMIT = 10_000  # rounds of consequences in one transaction: a chain this long is a bug


class ReportsPartlyWritten(Exception):
    """``Engine.exchange`` wrote some of a worker's reports, each a whole change
    of its own, before writing the rest failed (the error it is raised from):
    ``written`` says which, in order. The caller keeps only the rest, to write
    again (the moves written would now be refused: their leases are spent)."""

    def __init__(self, written: list[bool]) -> None:
        super().__init__(f"{sum(written)} of {len(written)} reports written before the rest failed")
        self.written = written


def _wakes(ready: bool) -> set[Wake]:
    """What listeners hear of a write: new events, and jobs ready if ``ready``."""
    return {Wake.EVENTS, Wake.READY} if ready else {Wake.EVENTS}


@dataclass(frozen=True, slots=True)
class BatchResult:
    """A worker's exchange: which reported moves won, the jobs it claimed, and what
    changed for the jobs it had claimed ahead."""

    applied: list[bool]
    claimed: list[Job]
    rechecked: list[Recheck] = field(default_factory=list)


class Engine:
    """The door for every write; ``read`` is the read side."""

    def __init__(self, store: Store, clock: Clock | None = None) -> None:
        self.store = store
        self.clock: Clock = clock or DatabaseClock()
        if isinstance(self.clock, DatabaseClock):
            self.clock.attach(store.database_time)
        self.read = Reader(store)
        self._listeners: dict[Wake, list[Callable[[], None]]] = {w: [] for w in Wake}
        self._observers: list[Callable[[frozenset[int], float], None]] = []
        self.replies: Callable[[Transaction, Sequence[int]], None] | None = None
        """Called in the transaction where jobs that something awaits completed
        (their ids): the durable machines deliver their jobs' replies there."""
        self._watching = False  # the store is told to watch at the first subscription
        self._subscribing = threading.Lock()

    # -- wake-ups -------------------------------------------------------------

    def subscribe(
        self, listener: Callable[[], None], wake: Wake = Wake.READY
    ) -> Callable[[], None]:
        """Call ``listener`` (from any thread) after a commit, here or in another
        process where the store can tell, that made jobs ready (``Wake.READY``)
        or appended any event (``Wake.EVENTS``). Returns the undo. The first
        subscription makes a store that can listen to other processes start
        listening (an engine nobody subscribes to, a producer's, hears nothing)."""
        with self._subscribing:
            self._listeners[wake] = [*self._listeners[wake], listener]
            if self.store.supports_listen and not self._watching:
                self._watching = True
                self.store.watch(self._heard)

        def unsubscribe() -> None:
            self._listeners[wake] = [f for f in self._listeners[wake] if f is not listener]

        return unsubscribe

    def observe(self, observer: Callable[[frozenset[int], float], None]) -> Callable[[], None]:
        """Call ``observer(job_ids, at)`` on the committing thread after each
        transaction of this engine that moved jobs (created ones included) has
        committed: their moves' events were written at ``at``. It must return
        at once (queue the work). Returns the undo."""
        self._observers = [*self._observers, observer]

        def unobserve() -> None:
            self._observers = [o for o in self._observers if o is not observer]

        return unobserve

    def _moved(self, job_ids: Iterable[int], at: float) -> None:
        moved = frozenset(job_ids)
        if moved:
            for observer in self._observers:
                observer(moved, at)

    def _heard(self, wake: Wake) -> None:
        self._tell({wake, Wake.EVENTS})

    def _tell(self, wakes: set[Wake]) -> None:
        for wake in wakes:
            for listener in self._listeners[wake]:
                listener()

    @contextmanager
    def _transaction(self, connection: Any = None, pipeline: bool = False) -> Iterator[Transaction]:
        """One store transaction; listeners are told once it has committed."""
        now = self.clock.now()
        with self.store.transaction(now, connection, pipeline=pipeline) as tx:
            tx.observed = bool(self._observers)
            yield tx
            wakes = set(tx.wakes())
        if connection is None:  # the caller's transaction has not committed yet
            self._written(wakes, tx.moved(), now)
            for call in tx.after_commit:
                call()

    def transaction(self, *, pipeline: bool = False) -> AbstractContextManager[Transaction]:
        """One transaction for a writer above the engine that keeps its own
        state beside the jobs' (the durable machines): jobs it creates go
        through ``enqueue_in``; wake-ups and ``tx.after_commit`` calls happen
        once it commits. ``pipeline``: as ``Store.transaction``'s."""
        return self._transaction(pipeline=pipeline)

    def enqueue_in(self, tx: Transaction, jobs: Sequence[NewJob], actor: str | None) -> list[Job]:
        """Create jobs that wait for no other inside ``tx`` (see ``enqueue``)."""
        for job in jobs:
            if job.state not in ENTRY_STATES or job.after:
                raise InvalidTransition(0, "(new)", job.state.value, "not a state a job starts in")
        return tx.insert_jobs(jobs, actor)

    def _apply(self, tx: Transaction, moves: Sequence[Move]) -> list[bool]:
        """Apply ``moves`` and everything they set off, round after round, in ``tx``."""
        applied = tx.apply_moves(moves)
        self._reply(tx, moves, applied)
        follow = consequences(tx, moves, applied)
        for _ in range(_CASCADE_LIMIT):
            if not follow:
                return applied.won
            then = tx.apply_moves(follow)
            self._reply(tx, follow, then)
            follow = consequences(tx, follow, then)
        raise RuntimeError(f"moves kept setting off more moves for {_CASCADE_LIMIT} rounds")

    def _reply(self, tx: Transaction, moves: Sequence[Move], applied: Applied) -> None:
        if self.replies is None or not applied.awaited:
            return
        completed = [
            m.job_id
            for m, ok in zip(moves, applied.won, strict=True)
            if ok and m.to_state is State.COMPLETED and m.job_id in applied.awaited
        ]
        if completed:
            self.replies(tx, completed)

    # -- the writes ---------------------------------------------------------------

    def apply(self, moves: Sequence[Move], notes: Sequence[Note] = ()) -> list[bool]:
        """Apply planned moves (and notes) in one transaction; which moves won."""
        if not moves and not notes:
            return []
        with self._transaction() as tx:
            tx.append_notes(notes)
            return self._apply(tx, moves)

    def exchange(
        self,
        finished: Sequence[Move],
        notes: Sequence[Note],
        claim: ClaimRequest | None,
        recheck: Sequence[int] = (),
    ) -> BatchResult:
        """A worker's turn, in one transaction: its notes, the moves that end its
        runs (and what they set off), what changed for the jobs it claimed ahead
        (``recheck``: their ids), then a claim of new jobs. A claim with no
        reports goes through ``Store.claim_alone``, and reports with no claim
        and no notes as ``_apply_alone`` says (each one round trip on
        PostgreSQL). Raises ``ReportsPartlyWritten`` when some reports were
        written and the rest failed."""
        if claim is not None and claim.limit <= 0 and not recheck:
            claim = None  # nothing to claim, nothing to recheck
        if claim is not None and not finished and not notes:
            now = self.clock.now()
            claimed, rechecked = self.store.claim_alone(claim, recheck, now)
            if claimed:
                self._written({Wake.EVENTS}, [job.id for job in claimed], now)
            return BatchResult([], claimed, rechecked)
        if claim is None and finished and not notes:
            return BatchResult(self._apply_alone(finished), [])
        with self._transaction(pipeline=True) as tx:
            tx.append_notes(notes)
            applied = self._apply(tx, finished) if finished else []
            rechecked = tx.recheck(claim.worker, recheck) if claim and recheck else []
            claimed = tx.claim(claim) if claim is not None else []
        return BatchResult(applied, claimed, rechecked)

    def _apply_alone(self, moves: Sequence[Move]) -> list[bool]:
        """Which of ``moves`` won: those that set off nothing by themselves (of
        jobs with one move here) through ``Store.apply_alone``, each a whole
        change of its own; what it left (a stale report, a job others wait on)
        and the rest in one transaction, with what they set off. Raises
        ``ReportsPartlyWritten`` when that transaction fails after some moves
        were written alone."""
        now = self.clock.now()
        per_job = Counter(move.job_id for move in moves)
        alone = [i for i, m in enumerate(moves) if per_job[m.job_id] == 1 and sets_off_nothing(m)]
        won = [False] * len(moves)
        if alone:
            applied = self.store.apply_alone([moves[i] for i in alone], now)
            for i, ok in zip(alone, applied, strict=True):
                won[i] = ok
            taken = [move for move, ok in zip(moves, won, strict=True) if ok]
            if taken:
                ready = any(move.to_state is State.READY for move in taken)
                self._written(_wakes(ready), [move.job_id for move in taken], now)
        left = [i for i, ok in enumerate(won) if not ok]
        if left:
            try:
                with self._transaction(pipeline=True) as tx:
                    rest = self._apply(tx, [moves[i] for i in left])
            except Exception as error:
                if any(won):
                    raise ReportsPartlyWritten(won) from error
                raise
            for i, ok in zip(left, rest, strict=True):
                won[i] = ok
        return won

    def _written(self, wakes: set[Wake], job_ids: Iterable[int], now: float) -> None:
        """A write has committed: listeners hear of ``wakes``, observers of the
        jobs it moved."""
        self._tell(wakes)
        if self._observers:
            self._moved(job_ids, now)

    def enqueue(
        self, jobs: Sequence[NewJob], actor: str | None = None, connection: Any = None
    ) -> list[Job]:
        """Create jobs, with their first events; a job whose dependencies have all
        ended already moves on in the same transaction. Raises
        ``InvalidTransition`` for a state no job starts in and ``JobNotFound`` for
        an unknown dependency, before anything is written."""
        for job in jobs:
            if job.state not in ENTRY_STATES:
                raise InvalidTransition(0, "(new)", job.state.value, "not a state a job starts in")
        for parent in sorted({p for job in jobs for p in job.after}):
            self.read.get(parent)
        if len(jobs) == 1 and not jobs[0].after and connection is None:
            now = self.clock.now()
            one = self.store.enqueue_one(jobs[0], actor, now)
            if one is not None:
                self._written(_wakes(one.state is State.READY), [one.id], now)
                return [one]
            # Its key exists: the transaction below returns the job that has it.
        with self._transaction(connection) as tx:
            created = tx.insert_jobs(jobs, actor)
            follow = start_or_fail(tx, created)
            if not follow:
                return created
            self._apply(tx, follow)
            moved = {m.job_id for m in follow}
            fresh = {job.id: tx.lock_job(job.id) for job in created if job.id in moved}
        return [fresh.get(job.id) or job for job in created]

    def release_waiters(self, waiters: Sequence[Job]) -> int:
        """Settle jobs that wait on others (as dependants or joining parents)
        whose awaited jobs may all have ended; how many moved."""
        if not waiters:
            return 0
        with self._transaction() as tx:
            moves = release(tx, waiters)
            return sum(self._apply(tx, moves)) if moves else 0

    def heartbeat(self, worker: str, job_ids: Sequence[int], renewal: Renewal) -> list[Held]:
        """What ``worker`` is asked about the jobs it holds; the leases due
        renewed (``Transaction.heartbeat``)."""
        with self._transaction() as tx:
            return tx.heartbeat(worker, job_ids, renewal)

    def request(
        self, job_id: int, request: Request, actor: str | None, detail_json: str | None = None
    ) -> bool:
        """Flag a leased job for cancel (or pause); its worker acts on it."""
        with self._transaction() as tx:
            return tx.raise_request(job_id, request, actor, detail_json)

    def roll_up(self, rollup: str, limit: int) -> int:
        """Count the next ``limit`` events into the state flows, once whoever
        leads; returns how many it counted."""
        return self.store.roll_up(rollup, limit)

    def prune(
        self,
        due: Sequence[tuple[int, int]],
        cursor: int | None,
        rolled_up_to: int,
        *,
        dry_run: bool = False,
    ) -> list[tuple[str, State]]:
        """Delete the finished jobs ``due`` (``(id, version)``) that nothing
        holds, in one transaction (see ``Store.prune``)."""
        return self.store.prune(due, cursor, rolled_up_to, dry_run=dry_run)

    def pause_queue(self, queue: str) -> bool:
        with self._transaction() as tx:
            return tx.pause_queue(queue)

    def resume_queue(self, queue: str) -> bool:
        with self._transaction() as tx:
            return tx.resume_queue(queue)

    def try_lead(self, role: str, holder: str, ttl: float) -> bool:
        return self.store.try_lead(Term(role, holder, ttl), self.clock.now())

    def resign(self, role: str, holder: str) -> None:
        self.store.resign(Term(role, holder, 0.0))

    # -- workers -----------------------------------------------------------------------

    def register_worker(self, worker: WorkerInfo) -> None:
        with self._transaction() as tx:
            tx.register_worker(worker)

    def unregister_worker(self, worker_id: str) -> None:
        with self._transaction() as tx:
            tx.unregister_worker(worker_id)

    def forget_workers(self, unseen_for: float) -> int:
        """Drop workers not heard of for ``unseen_for`` seconds."""
        with self._transaction() as tx:
            return tx.forget_workers(tx.now - unseen_for)

    # -- durable execution: what a handler's context writes -------------------------

    def save_step(self, lease: Lease, name: str, result_json: str | None) -> Held | None:
        """Store a step's result while ``lease`` holds; None once it does not."""
        with self._transaction() as tx:
            return tx.save_step(lease, name, result_json)

    def save_checkpoint(self, lease: Lease, data_json: str) -> Held | None:
        with self._transaction() as tx:
            return tx.save_checkpoint(lease, data_json)

    def awakeable(self, job_id: int, name: str) -> Awakeable:
        """The job's awakeable ``name``, created on first use."""
        with self._transaction() as tx:
            return tx.awakeable(job_id, name, uuid.uuid4().hex)

    def set_signal_timeout(self, awakeable_id: str, timeout_at: float) -> None:
        with self._transaction() as tx:
            tx.set_awakeable_timeout(awakeable_id, timeout_at)

    def settle_signal(self, settlement: Settlement, actor: str | None) -> Awakeable:
        """Resolve or reject an awakeable once, and wake its job if it is suspended,
        in one transaction. Raises ``AwakeableNotFound``, ``SignalAlreadySettled``."""
        awakeable = self.read.awakeable(settlement.awakeable_id)
        with self._transaction() as tx:
            job = tx.lock_job(awakeable.job_id)  # the job first, then its awakeable
            if not tx.settle_awakeable(settlement):
                now = tx.get_awakeable(awakeable.id)
                raise SignalAlreadySettled(awakeable.id, now.state if now else "gone")
            if job is not None and job.state is State.SUSPENDED:
                detail = {"signal": awakeable.name}
                wake = plan_move(job, State.READY, Trigger.SIGNAL, actor=actor, detail=detail)
                self._apply(tx, [wake])
            settled = tx.get_awakeable(awakeable.id)
        assert settled is not None
        return settled
