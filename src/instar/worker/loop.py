"""The worker: report finished jobs and claim new ones, run them, repeat.

One loop, read top to bottom in ``run``:

1. in one transaction: write the finished runs and queued progress, learn
   what changed for the jobs claimed ahead (a cancel, a pause, a paused
   queue), and claim as many ready jobs as there are free slots (plus some
   ahead while a backlog lasts), of the names this worker has handlers for;
2. start claimed jobs while there are free slots: async handlers as tasks,
   sync ones in a thread pool; a job claimed ahead that could not start
   within ``claim_ahead_wait`` goes back to ready for an idle worker;
3. wait until a job finishes, a job is enqueued in this process, another
   process commits, or the poll interval passes; while a backlog lasts, wait
   instead for the reports of the next batch to gather (a group commit).

A slot is free only when no handler occupies it: a ``def`` handler that ran
past its timeout keeps its thread, and its slot counts as lost until it
returns. Beside the loop, a thread of its own keeps every lease alive
(``heartbeat``), and the maintenance services run while this worker leads.

On SIGINT/SIGTERM the worker stops claiming, lets running jobs finish within
``shutdown_grace``, then cancels the ``async def`` ones (their jobs go back to
ready); a ``def`` handler cannot be stopped, so its job stays this worker's,
its lease kept alive, until it returns. A second signal ends the worker at
once: jobs whose handlers still run are left to their leases (rescued when
they run out, once the process is gone). A clean stop gives up the
maintenance leadership at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from instar.context import Context
from instar.engine import (
    BatchResult,
    Cancelled,
    Engine,
    Outcome,
    Paused,
    Raised,
    Released,
    ReportsPartlyWritten,
    outcome_moves,
    refused_report_moves,
)
from instar.errors import StoreRefused
from instar.lifecycle import State
from instar.maintenance.runner import Maintenance
from instar.models import Job
from instar.payload import DEFAULT_MAX_BYTES
from instar.registry import JobDefinition, Registry
from instar.retention import Retention
from instar.retry import Retry
from instar.store.contract import ClaimRequest, Held, Move, Note, RateHold, Recheck, WorkerInfo
from instar.tracing import RunTracing
from instar.vocabulary import Trigger
from instar.worker.executor import HandlerThreads, call_async, call_sync, fatal, past_timeout
from instar.worker.heartbeat import Heartbeat
from instar.worker.job_log import JobLog
from instar.worker.observer import RunObserver
from instar.worker.outbox import Outbox

if TYPE_CHECKING:
    from instar.machines import MachineRuntime

log = logging.getLogger("instar.worker")

T = TypeVar("T")

PREFETCH_PAUSE = 5.0
"""Seconds a worker claims no job ahead after one it claimed ahead had to go back."""

MAX_CLAIM = 500
"""Jobs one batch claims at most."""

MAX_AHEAD = 4 * MAX_CLAIM
"""Jobs a worker claims ahead at most, however fast it goes: a job held in memory
costs about 1 KB, so a worker's memory does not grow with its pace. Measured on
SQLite, 300,000 no-op jobs through ``instar worker --burst``: RSS from job
10,000 on +8.3 % uncapped (a buffer of ~7,000 jobs at 14,000 jobs/s), +0.7 %
capped, for 2-4 % of throughput; ``make bench``'s memory row went from +13.6 %
to +6.0 %."""

GATHER_WAIT = 0.02
"""Seconds from one batch's start within which the next waits for reports, while
a backlog lasts (see ``Worker._gather_reports``)."""

GATHER_REPORTS = MAX_CLAIM
"""Reports a batch waits for, and jobs claimed ahead it needs meanwhile (they
keep the slots busy while it waits)."""

RECHECKED_LATELY = 0.1
"""Seconds after a batch rechecked the jobs claimed ahead during which a slot that
frees starts the next of them at once, without waiting for the next batch."""


@dataclass
class WorkerSettings:
    queues: Sequence[str] | None = None
    concurrency: int = 10
    burst: bool = False
    poll_interval: float = 0.002
    fallback_poll_interval: float = 1.0
    maintenance_interval: float = 0.2
    shutdown_grace: float = 10.0
    cancel_grace: float = 10.0
    claim_ahead_wait: float = 1.0
    """Seconds a job claimed ahead may wait for a slot before it goes back to ready."""
    handle_signals: bool = True
    max_payload_bytes: int = DEFAULT_MAX_BYTES
    retention: Retention = field(default_factory=Retention)
    """How long finished jobs are kept; the maintenance leader prunes the rest."""
    observer: RunObserver | None = None
    """Told of each run's start and of each move and heartbeat (metrics)."""


@dataclass
class WorkerReport:
    completed: int = 0
    failed: int = 0
    released: int = 0
    refused: int = 0
    overruns: int = 0
    """``def`` handlers that ran on past their timeout (their slot lost meanwhile)."""
    slots_lost: int = 0
    """Slots held, now, by such handlers."""
    by_state: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        text = (
            f"{self.completed} completed, {self.failed} failed, "
            f"{self.released} released, {self.refused} refused"
        )
        if self.overruns:
            text += f", {self.overruns} ran past their timeout"
        return text


@dataclass
class _Run:
    job: Job
    ctx: Context
    definition: JobDefinition
    task: asyncio.Task[None] | None = None  # an async def handler's
    timer: asyncio.TimerHandle | None = None  # a def handler's timeout
    overran: bool = False  # a def handler past its timeout, still in its thread
    began: float = 0.0
    span: Any = None  # the run's OpenTelemetry span (instar.tracing), if tracing is on


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        engine: Engine,
        registry: Mapping[str, JobDefinition],
        settings: WorkerSettings | None = None,
        machines: Callable[[], MachineRuntime] | None = None,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.settings = settings or WorkerSettings()
        if self.settings.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.settings.concurrency}")
        self.id = new_worker_id()
        self.report = WorkerReport()
        self._running: dict[int, _Run] = {}
        self._buffer: deque[tuple[Job, float]] = deque()  # claimed ahead, with when
        self._claim_judged = 0.0  # the clock's time just before the last claim
        self._rate_rechecked = False  # the last idle turned back for a rate that came due
        self._thread_ends: deque[tuple[_Run, Outcome | None]] = deque()  # from pool threads
        self._thread_ends_signalled = False
        self._backlog = False
        self._prefetch_after = 0.0
        # Two slots' worth (at least 20 runs): see Pace.
        self._pace = Pace(enough=max(2 * self.settings.concurrency, 20))
        self._rechecked_at = -1.0
        self._failures = 0  # consecutive batches the database refused
        self._claims_unsure = False  # a batch that claimed failed: did it commit?
        self._outbox = Outbox()
        self._stopping = False
        self._abandoned = False
        self._waiting_said = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wake: asyncio.Event | None = None
        self._db = ThreadPoolExecutor(1, thread_name_prefix="instar-db")
        # Where the database takes writers side by side, claims go on a second
        # connection while the reports are written (see ``_exchange``).
        self._claims_db = (
            ThreadPoolExecutor(1, thread_name_prefix="instar-claims")
            if engine.store.concurrent_writers
            else None
        )
        # Maintenance sweeps on a thread of their own: never in the way of a batch.
        self._sweeper = ThreadPoolExecutor(1, thread_name_prefix="instar-maintenance")
        self._threads = HandlerThreads(self.settings.concurrency, self._run_in_thread, "instar-job")
        self._in_threads = 0  # def handlers given to a thread whose end is not taken yet
        self._maintenance = Maintenance(
            engine,
            self.id,
            retention=self.settings.retention,
            definitions=list(registry.values()),
            machines=machines,
        )
        self._job_log = JobLog(self.id)
        self._tracing = RunTracing()
        self._heartbeat = Heartbeat(engine, self._info(), self._held, self._heard)
        self._limits = registry.flow_limits() if isinstance(registry, Registry) else None

    # -- the loop -------------------------------------------------------------

    async def run(self) -> WorkerReport:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        unsubscribe = self.engine.subscribe(self._wake_threadsafe)
        self._install_signal_handlers()
        await self._call(self._heartbeat.start)
        if isinstance(self.registry, Registry):
            await self._call(self._declare_limits, self.registry)
        maintenance = asyncio.create_task(self._maintenance_loop())
        marker = await self._call(self.engine.read.change_marker)
        shutdown_deadline: float | None = None
        quiet_passes = 0
        log.info("worker %s started (concurrency %d)", self.id, self.settings.concurrency)
        try:
            while not self._abandoned:
                if self._stopping:
                    self._release_buffered()
                    shutdown_deadline = (
                        shutdown_deadline or time.monotonic() + self.settings.shutdown_grace
                    )
                    if self._running and time.monotonic() >= shutdown_deadline:
                        self._stop_what_can_stop()
                    if not self._running:
                        break
                self._release_stale_buffered()
                self._job_log.flush()
                if self._claims_unsure and not await self._take_up_lost_claims():
                    continue
                wanted = self._claims_wanted()
                moves, notes = self._outbox.take()
                recheck = [job.id for job, _ in self._buffer]
                if moves or notes or wanted or (recheck and self._free_slots()):
                    claim = self._claim_request(wanted)
                    self._claim_judged = self.engine.clock.now()
                    began = time.monotonic()
                    try:
                        batch = await self._exchange(moves, notes, claim, recheck)
                    except ReportsPartlyWritten as partly:
                        written = [m for m, ok in zip(moves, partly.written, strict=True) if ok]
                        self._count_reports(written, [True] * len(written))
                        rest = [m for m, ok in zip(moves, partly.written, strict=True) if not ok]
                        await self._batch_failed(partly.__cause__ or partly, rest, notes)
                        continue
                    except Exception as error:
                        await self._batch_failed(error, moves, notes)
                        continue
                    self._failures = 0
                    self._count_reports(moves, batch.applied)
                    self._take_claimed(batch, wanted)
                    if batch.claimed or moves or notes:
                        quiet_passes = 0
                    if moves or notes or self._backlog:
                        await self._gather_reports(began)
                        continue
                    # A claim that found fewer jobs than it wanted emptied the
                    # queue: the next comes with a wake-up, not by claiming again
                    # at once (a round trip the new jobs' threads would wait on).
                if self._outbox:
                    continue
                if self.settings.burst and not self._running and not self._stopping:
                    # Exit once a maintenance pass moved nothing and a claim made
                    # after it found nothing (the background pass may move jobs too).
                    report = await self._call(self._maintenance.run_once)
                    if report.changed:
                        if self.settings.observer is not None:
                            self.settings.observer.maintained(report)
                        quiet_passes = 0
                    else:
                        quiet_passes += 1
                        if quiet_passes > 1 and (await self._rate_hold()).next_start is None:
                            break
                    if quiet_passes <= 1:
                        continue
                marker = await self._idle(marker, free=wanted > 0)
            if not self._abandoned:
                await self._flush()
            self._job_log.flush()
        finally:
            unsubscribe()
            self._remove_signal_handlers()
            maintenance.cancel()
            await asyncio.gather(maintenance, return_exceptions=True)
            # A pass still on the sweeper thread may take the leadership after a
            # resignation: it ends before the worker gives anything back.
            await asyncio.to_thread(self._sweeper.shutdown, True)
            await self._call(self._give_back)
            self._tracing.close()
            self._threads.shutdown()
            if self._claims_db is not None:
                self._claims_db.shutdown(wait=True)
            self._db.shutdown(wait=True)
        log.info("worker %s stopped: %s", self.id, self.report)
        return self.report

    async def _exchange(
        self, moves: list[Move], notes: list[Note], claim: ClaimRequest, recheck: list[int]
    ) -> BatchResult:
        """One batch: the reports, then the recheck and the claim. In one
        transaction where the database has one writer at a time (SQLite: one
        commit). Where it takes writers side by side (PostgreSQL), as two
        transactions at once on two connections, which the database works on in
        parallel: each is a whole change of its own (ending runs; claiming jobs).
        A claim that went through is kept when the reports failed, and the other
        way round; the failure is raised after."""
        claims_db = self._claims_db
        if claims_db is None or not (moves or notes) or not (claim.limit or recheck):
            try:
                return await self._call(self.engine.exchange, moves, notes, claim, recheck)
            except StoreRefused:
                raise  # refused before the commit: nothing of it was written
            except Exception:
                # The commit may have gone through before the connection broke.
                self._claims_unsure = self._claims_unsure or claim.limit > 0
                raise
        loop = self._loop_()
        reports, claims = await asyncio.gather(
            loop.run_in_executor(self._db, self.engine.exchange, moves, notes, None),
            loop.run_in_executor(claims_db, self.engine.exchange, [], [], claim, recheck),
            return_exceptions=True,
        )
        if isinstance(reports, BaseException):
            if isinstance(claims, BaseException):
                self._claims_unsure = self._claims_unsure or claim.limit > 0
            else:
                self._take_claimed(claims, claim.limit)
            raise reports
        if isinstance(claims, BaseException):
            self._claims_unsure = self._claims_unsure or claim.limit > 0
            log.warning("claiming failed (%s); trying again with the next batch", claims)
            return BatchResult(reports.applied, [])
        return BatchResult(reports.applied, claims.claimed, claims.rechecked)

    async def _gather_reports(self, began: float) -> None:
        """While a backlog lasts, every slot is busy and at least
        ``GATHER_REPORTS`` jobs are claimed ahead, the next batch waits for
        more reports (a group commit): until ``GATHER_REPORTS`` are queued, or
        ``GATHER_WAIT`` after the last batch began, or one of those conditions
        ends (a worker claiming fewer ahead, at a slower pace or with a short
        ``claim_ahead_wait``, does not wait). A batch costs mostly per batch
        (its commit, its statements), so batches back to back, each carrying
        the few runs that ended during the last, leave the worker busy with
        batches rather than runs. Measured on SQLite, 100,000 no-op ``def``
        jobs through ``instar worker --burst``: back to back, runs fell into
        one of two paces, by chance: about 83 runs a batch (1,162-1,264
        batches, 8.3-9.1 s) or 465 (215 batches, 5.7-6.0 s); with this wait,
        204-332 batches in 5.4-6.9 s, every run. A run's end reaches the
        database up to ``GATHER_WAIT`` later (its lease is kept alive
        meanwhile)."""
        assert self._wake is not None
        while (
            not self._stopping
            and len(self._outbox) < GATHER_REPORTS
            and len(self._buffer) >= GATHER_REPORTS
            # A free slot here waits for a batch to recheck the jobs claimed
            # ahead (``RECHECKED_LATELY``): no more waiting then.
            and self._free_slots() == 0
        ):
            left = began + GATHER_WAIT - time.monotonic()
            if left <= 0:
                return
            self._wake.clear()
            try:
                async with asyncio.timeout(left):
                    await self._wake.wait()
            except TimeoutError:
                return

    def _take_claimed(self, batch: BatchResult, wanted: int) -> None:
        """What a batch claimed joins the jobs claimed ahead, after what its recheck
        found; free slots start them."""
        self._honour(batch.rechecked)
        self._rechecked_at = time.monotonic()
        now = time.monotonic()
        self._buffer.extend((job, now) for job in batch.claimed)
        if batch.claimed:
            self._heartbeat.nudge()
            if self.settings.observer is not None:
                self.settings.observer.claimed(batch.claimed)
        self._backlog = bool(wanted) and len(batch.claimed) == wanted
        self._start_buffered()

    def _claim_request(self, wanted: int) -> ClaimRequest:
        """Up to ``wanted`` jobs (0: only a recheck), of the names this worker runs."""
        return ClaimRequest(
            self.id, wanted, self.settings.queues, names=list(self.registry), limits=self._limits
        )

    def _declare_limits(self, registry: Registry) -> None:
        """Record the limits this worker runs with, for ``instar queues``."""
        now = self.engine.clock.now()
        self.engine.store.declare_flow_limits(registry.declared_limits(), list(registry), now)

    def _free_slots(self) -> int:
        """Slots no handler occupies: a ``def`` handler past its timeout keeps its slot."""
        return self.settings.concurrency - len(self._running) - self.report.slots_lost

    def _claims_wanted(self) -> int:
        """Free slots, plus, while the queue has a backlog, as many jobs ahead as
        this worker starts in half its ``claim_ahead_wait`` at its current pace
        (``MAX_AHEAD`` at most): the batch grows with the pace, not with the
        number of slots, and a job claimed ahead is one that will start soon.
        No claiming ahead for a while after a job claimed ahead had to go back
        (it would only come back again)."""
        if self._stopping:
            return 0
        ahead = 0
        if self._backlog and time.monotonic() >= self._prefetch_after:
            soon = self._pace.per_second() * self.settings.claim_ahead_wait / 2
            ahead = max(self.settings.concurrency, min(int(soon), MAX_AHEAD))
        wanted = self._free_slots() + ahead - len(self._buffer)
        return max(0, min(wanted, MAX_CLAIM))

    def _start_buffered(self) -> None:
        while self._buffer and self._free_slots() > 0:
            job, _ = self._buffer.popleft()
            self._start(job)

    def _honour(self, rechecked: Sequence[Recheck]) -> None:
        """Jobs claimed ahead whose cancel, pause or queue pause came after their
        claim do not start: they end as asked, or go back to ready."""
        halted = {r.job_id: r for r in rechecked if not r.held or _asked(r)}
        if not halted:
            return
        kept: deque[tuple[Job, float]] = deque()
        for job, claimed_at in self._buffer:
            check = halted.get(job.id)
            if check is None:
                kept.append((job, claimed_at))
            elif not check.held:
                log.warning("job %d: claimed ahead, but this worker no longer holds it", job.id)
            elif check.cancel_requested:
                self._queue_outcome(job, Retry(), Cancelled())
            elif check.pause_requested:
                self._queue_outcome(job, Retry(), Paused())
            else:
                self._queue_outcome(job, Retry(), Released())
        self._buffer = kept

    def _release_stale_buffered(self) -> None:
        """A job claimed ahead that found no slot within ``claim_ahead_wait`` goes
        back to ready, where an idle worker can take it."""
        if not self._buffer:
            return
        limit = time.monotonic() - self.settings.claim_ahead_wait
        while self._buffer and self._buffer[0][1] < limit:
            job, _ = self._buffer.popleft()
            self._queue_outcome(job, Retry(), Released())
            self._prefetch_after = time.monotonic() + PREFETCH_PAUSE

    def _claim_ahead_expired(self) -> bool:
        wait = self.settings.claim_ahead_wait
        return bool(self._buffer) and time.monotonic() >= self._buffer[0][1] + wait

    def stop(self) -> None:
        """Stop claiming; let running jobs finish within the shutdown grace."""
        self._stopping = True
        self._wake_threadsafe()

    def abandon(self) -> None:
        """Stop at once: jobs whose handlers still run stay this worker's until
        their leases run out (after this process is gone)."""
        self._abandoned = True
        self.stop()

    async def _idle(self, marker: int, *, free: bool) -> int:
        """Sleep until there may be work: a wake-up, another process's commit, or
        the fallback poll (a wake-up that was missed costs at most that long)."""
        assert self._wake is not None
        give_up = time.monotonic() + self.settings.fallback_poll_interval
        if free:
            # A job a rate holds back can start at a time no commit announces.
            hold = await self._rate_hold()
            if hold.came_due and not self._rate_rechecked:
                # The last claim may have judged a rate a moment before it
                # reopened: claim once more before sleeping (once per sleep, so
                # jobs nobody here may start never make it spin).
                self._rate_rechecked = True
                return marker
            self._rate_rechecked = False
            if hold.next_start is not None:
                give_up = min(give_up, hold.next_start)
        # Where the store hears other processes' commits (PostgreSQL's LISTEN),
        # they set the wake-up; elsewhere (SQLite) only a look at the change
        # marker sees them, every poll interval, on this thread (no hop to the
        # database thread: the look costs a few microseconds).
        polling = not self.engine.store.supports_listen
        while not self._wake.is_set():
            now = time.monotonic()
            if free and now >= give_up:
                return marker
            wait = give_up - now if free else self.settings.fallback_poll_interval
            if polling or self._stopping:  # stopping: back soon for the shutdown deadline
                wait = min(wait, self.settings.poll_interval)
            if self._buffer:
                wait = min(wait, self._buffer[0][1] + self.settings.claim_ahead_wait - now)
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    await self._wake.wait()
            except TimeoutError:
                if self._stopping or self._claim_ahead_expired():
                    break  # back to the loop: the shutdown deadline, the claim-ahead wait
                if free:
                    latest = self.engine.read.change_marker()
                    if latest != marker:
                        return latest
        self._wake.clear()
        return marker

    async def _rate_hold(self) -> RateHold:
        """The rates that hold this worker's jobs back: ``next_start`` as
        ``time.monotonic``, and whether one reopened since the last claim was
        judged. Nothing held when none of its jobs has a rate."""
        if self._limits is None or self._limits.fastest_interval is None:
            return RateHold(None, False)
        now = self.engine.clock.now()
        hold = await self._call(self.engine.read.rate_hold, now, self._claim_judged)
        if hold.next_start is None:
            return hold
        return RateHold(time.monotonic() + (hold.next_start - now), hold.came_due)

    async def _take_up_lost_claims(self) -> bool:
        """A batch that claimed jobs failed, but its commit may have reached the
        database before the connection broke: jobs it claimed would then sit
        running under this worker's name, unknown here, until their leases ran
        out. Find them and treat them as claimed ahead (they start, or go back to
        ready). False while the database cannot answer."""
        try:
            claimed = await self._call(self.engine.read.claimed_by, self.id)
        except Exception as error:
            await self._retry_later(error, [], [])
            return False
        known = set(self._running) | {job.id for job, _ in self._buffer}
        known |= self._outbox.job_ids()
        now = time.monotonic()
        for job in claimed:
            if job.id not in known:
                log.warning(
                    "job %d: claimed by a batch whose answer was lost; taking it up", job.id
                )
                self._buffer.append((job, now))
        self._claims_unsure = False
        return True

    async def _batch_failed(
        self, error: BaseException, moves: list[Move], notes: list[Note]
    ) -> None:
        """Writing a batch's reports failed with ``error``. Data the database
        refuses: the reports one by one (one report it cannot store must not
        hold back the rest). Anything else (locked past the busy timeout, disk
        full, gone): keep them for the next try and back off, up to 5 s."""
        if isinstance(error, StoreRefused):
            log.warning("a batch was refused (%s); writing its reports one by one", error)
            await self._call(self._write_one_by_one, moves, notes)
        else:
            await self._retry_later(error, moves, notes)

    async def _retry_later(
        self, error: BaseException, moves: list[Move], notes: list[Note]
    ) -> None:
        self._failures += 1
        delay = min(5.0, 0.05 * 2**self._failures)
        log.warning("writing a batch failed (%s); trying again in %.2fs", error, delay)
        self._outbox.put_back(moves, notes)
        await asyncio.sleep(delay)

    def _write_one_by_one(self, moves: list[Move], notes: list[Note]) -> None:
        """Write a refused batch's reports one job at a time. A job whose report the
        database refuses ends failed with an error saying so; a refused note is
        dropped with a log line; reports that meet a database failure go back to
        the outbox for the next batch."""
        retry_moves: list[Move] = []
        retry_notes: list[Note] = []
        for group in _by_job(moves):
            try:
                self._count_reports(group, self.engine.apply(group))
            except StoreRefused as refused:
                self._fail_refused(group, refused)
            except Exception:
                retry_moves += group
        for note in notes:
            try:
                self.engine.apply([], [note])
            except StoreRefused as refused:
                log.warning(
                    "job %d: a %s note was refused (%s); dropped",
                    note.job_id,
                    note.trigger,
                    refused,
                )
            except Exception:
                retry_notes.append(note)
        if retry_moves or retry_notes:
            self._outbox.put_back(retry_moves, retry_notes)

    def _fail_refused(self, group: list[Move], refused: StoreRefused) -> None:
        fallback = refused_report_moves(group, refused)
        log.error(
            "job %d: its report (%s) could not be stored: %s",
            group[0].job_id,
            group[0].trigger,
            refused,
        )
        try:
            self._count_reports(fallback, self.engine.apply(fallback))
        except Exception as exc:
            # Its lease runs out and maintenance takes it back.
            self._outbox.written([group[0].job_id])
            log.error("job %d: even its failure could not be stored: %s", group[0].job_id, exc)

    # -- running one job ------------------------------------------------------------

    def _start(self, job: Job) -> None:
        definition = self.registry.get(job.name)
        if definition is None:
            # Claims ask only for this worker's names: the registry changed under it.
            log.warning("job %d: no handler for %r here; handing it back", job.id, job.name)
            self._queue_outcome(job, Retry(), Released())
            return
        ctx = Context(
            job,
            self.id,
            self._report,
            self.engine,
            max_payload_bytes=self.settings.max_payload_bytes,
        )
        run = _Run(job, ctx, definition)
        self._running[job.id] = run
        self._pace.started()
        self._job_log.started(job)
        if self.settings.observer is not None:
            self.settings.observer.started(job)
        run.span = self._tracing.start(job)
        if definition.is_async:
            run.task = asyncio.create_task(self._execute(run), name=f"instar-job-{job.id}")
        else:
            self._in_threads += 1
            self._threads.submit(run, self._in_threads)

    async def _execute(self, run: _Run) -> None:
        """An ``async def`` handler's run, as a task on the loop. It never raises
        (so no callback per task has to look at how it ended): ``_ended`` takes
        a fault in planning the end, the guard here one anywhere else."""
        try:
            try:
                with self._tracing.inside(run.span):
                    outcome = await call_async(run.definition, run.ctx, run.job.args)
            except asyncio.CancelledError:
                if not run.ctx.cancelled:
                    return  # released at shutdown: _stop_what_can_stop has reported it
                outcome = Cancelled()
            self._ended(run, outcome)
        except Exception as error:
            self._could_not_end(run, error)

    def _could_not_end(self, run: _Run, error: Exception) -> None:
        """An error of Instar's own (an outcome it could not even plan) ended a
        run: the job still ends, failed, and the error is logged; nothing is left
        running unseen."""
        log.error("job %d: the worker could not end its run: %r", run.job.id, error)
        if self._running.get(run.job.id) is run:
            try:
                self._end_run(run, Retry(max_attempts=1), Raised(fatal(error)))
            except Exception as exc:
                log.error("job %d: left to its lease: %r", run.job.id, exc)
                self._running.pop(run.job.id, None)

    def _run_in_thread(self, run: _Run) -> None:
        """A ``def`` handler's run, in a pool thread; its end goes back to the loop,
        with the ends of other runs that finish before the loop takes them: one
        wake-up of the loop for all of them, not one per job."""
        loop = self._loop
        assert loop is not None
        if run.definition.options.timeout is not None:
            loop.call_soon_threadsafe(self._arm_timeout, run)
        with self._tracing.inside(run.span):
            outcome = call_sync(run.definition, run.ctx, run.job.args)
        self._thread_ends.append((run, outcome))
        if not self._thread_ends_signalled:
            self._thread_ends_signalled = True
            loop.call_soon_threadsafe(self._take_thread_ends)

    def _take_thread_ends(self) -> None:
        # The flag drops before the queue is read: an end appended after this
        # point either is taken below or signals again.
        self._thread_ends_signalled = False
        while self._thread_ends:
            self._thread_done(*self._thread_ends.popleft())

    def _arm_timeout(self, run: _Run) -> None:
        timeout = run.definition.options.timeout
        if timeout is not None and self._running.get(run.job.id) is run:
            run.began = time.monotonic()
            run.timer = self._loop_().call_later(timeout, self._past_timeout, run)

    def _past_timeout(self, run: _Run) -> None:
        """A ``def`` handler ran past its timeout: its attempt fails now, but its
        thread runs on. Its slot counts as lost until the thread ends."""
        if self._running.get(run.job.id) is not run:
            return
        run.overran = True
        self.report.overruns += 1
        self.report.slots_lost += 1
        log.warning(
            "job %d: its def handler runs on past its timeout; its slot is lost until it "
            "returns (%d lost)",
            run.job.id,
            self.report.slots_lost,
        )
        self._ended(run, Raised(past_timeout(run.ctx, run.definition)))

    def _thread_done(self, run: _Run, outcome: Outcome | None) -> None:
        self._in_threads -= 1
        if run.timer is not None:
            run.timer.cancel()
        if run.overran:
            self.report.slots_lost -= 1
            log.warning(
                "job %d: its def handler returned %.1fs after its timeout; slot back",
                run.job.id,
                time.monotonic() - run.began - (run.definition.options.timeout or 0.0),
            )
            self._wake_threadsafe()
            self._start_when_rechecked()
            return
        self._ended(run, outcome)

    def _ended(self, run: _Run, outcome: Outcome | None) -> None:
        if outcome is None:
            log.warning("job %d: this worker lost its lease; dropping the run", run.job.id)
            if self._running.get(run.job.id) is run:
                del self._running[run.job.id]
            self._tracing.lost(run.span)
            if self.settings.observer is not None:
                self.settings.observer.lost([run.job.id])
            return
        if run.ctx.cancelled:
            outcome = Cancelled()
        try:
            self._end_run(run, run.definition.options.retry, outcome)
        except Exception as error:  # every way a run ends (task, thread, timeout) comes here
            self._could_not_end(run, error)

    def _end_run(self, run: _Run, retry: Retry, outcome: Outcome) -> None:
        """Queue the move that ends a run, once: the first outcome wins. The slot it
        frees takes the next job claimed ahead at once, if a batch rechecked those
        lately (else the loop's next batch rechecks them first)."""
        if self._running.get(run.job.id) is not run:
            return
        moves = self._queue_outcome(run.ctx.job, retry, outcome)  # may raise: still running
        del self._running[run.job.id]
        if not run.overran:  # a run past its timeout keeps its slot until its thread returns
            self._pace.ended()
        self._tracing.ending(
            run.span, moves, outcome.error if isinstance(outcome, Raised) else None
        )
        self._start_when_rechecked()

    def _start_when_rechecked(self) -> None:
        if (
            self._buffer
            and not self._stopping
            and time.monotonic() - self._rechecked_at < RECHECKED_LATELY
        ):
            self._start_buffered()

    def _queue_outcome(self, job: Job, retry: Retry, outcome: Outcome) -> list[Move]:
        moves = outcome_moves(
            job,
            outcome,
            retry=retry,
            now=self.engine.clock.now(),
            max_payload_bytes=self.settings.max_payload_bytes,
        )
        self._outbox.add(moves=moves, lease_seconds=job.lease_seconds)
        self._wake_threadsafe()
        return moves

    def _report(self, entry: Note | Move) -> None:
        """Called from handlers, in any thread: queue a note (or a service's move
        to serving) for the next batch."""
        if isinstance(entry, Move):
            self._outbox.add(moves=[entry])
        else:
            self._outbox.add(notes=[entry])
        self._wake_threadsafe()

    def _stop_what_can_stop(self) -> None:
        """The shutdown grace is over: ``async def`` handlers are cancelled and their
        jobs go back to ready. A ``def`` handler cannot be stopped: its job stays
        this worker's (lease kept alive) until it returns."""
        waiting = 0
        for run in list(self._running.values()):
            if not run.definition.is_async:
                waiting += 1
                continue
            self._end_run(run, Retry(), Released())
            if run.task is not None:
                run.task.cancel()
        if waiting and not self._waiting_said:
            self._waiting_said = True
            log.warning(
                "waiting for %d def handler(s) that cannot be interrupted; their jobs stay "
                "this worker's until they return (signal again to exit now: their jobs "
                "come back once their leases run out)",
                waiting,
            )

    def _release_buffered(self) -> None:
        """Jobs claimed ahead but never started go back to ready, attempt uncounted."""
        while self._buffer:
            job, _ = self._buffer.popleft()
            self._queue_outcome(job, Retry(), Released())

    def _cancel_requested(self, job_id: int) -> None:
        waiting = next((entry for entry in self._buffer if entry[0].id == job_id), None)
        if waiting is not None:
            self._buffer.remove(waiting)
            self._queue_outcome(waiting[0], Retry(), Cancelled())
            return
        run = self._running.get(job_id)
        if run is None or run.ctx.cancelled:
            return
        run.ctx.request_cancel()
        if run.task is not None and run.definition.is_async:
            run.task.cancel()
        assert self._loop is not None
        self._loop.call_later(self.settings.cancel_grace, self._force_cancel, run)

    def _force_cancel(self, run: _Run) -> None:
        """The handler ignored the cancel request for the whole grace period."""
        if self._running.get(run.job.id) is run:
            log.warning("job %d ignored its cancel request for the grace period", run.job.id)
            self._end_run(run, Retry(), Cancelled())

    # -- beside the loop -------------------------------------------------------------

    def _info(self) -> WorkerInfo:
        queues = None if self.settings.queues is None else tuple(self.settings.queues)
        return WorkerInfo(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            concurrency=self.settings.concurrency,
            queues=queues,
            handlers=tuple(self.registry),
        )

    def _held(self) -> list[tuple[int, float]]:
        """(job id, lease seconds) of every job this worker holds: its handlers that
        really run, its jobs claimed ahead, and the jobs whose end is not yet
        written. Called from the heartbeat's thread: a dict's ``copy`` and a
        deque's ``list`` are atomic under the GIL."""
        running = self._running.copy()
        buffered = list(self._buffer)
        held = [(job_id, run.job.lease_seconds) for job_id, run in running.items()]
        held += [(job.id, job.lease_seconds) for job, _ in buffered]
        return held + self._outbox.held()

    def _heard(self, news: list[Held]) -> None:
        """From the heartbeat's thread: hand what it learned to the loop."""
        if self.settings.observer is not None:
            self.settings.observer.heartbeat()
        loop = self._loop
        if news and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._act_on, news)

    def _act_on(self, news: list[Held]) -> None:
        for job in news:
            if job.cancel_requested:
                self._cancel_requested(job.job_id)
                continue
            run = self._running.get(job.job_id)
            if run is not None:
                run.ctx.set_state(job.state)
                if job.pause_requested:
                    run.ctx.request_pause()

    async def _maintenance_loop(self) -> None:
        while True:
            try:
                assert self._loop is not None
                report = await self._loop.run_in_executor(
                    self._sweeper, self._maintenance.run_if_leader
                )
            except Exception as exc:
                log.warning("maintenance pass failed (%s); will try again", exc)
            else:
                if report is not None and report.changed:
                    if self.settings.observer is not None:
                        self.settings.observer.maintained(report)
                    self._wake_threadsafe()
            await asyncio.sleep(self.settings.maintenance_interval)

    def _give_back(self) -> None:
        """On the way out: stop the heartbeat, give up the maintenance leadership,
        and say this worker is gone, so that others take over at once."""
        self._heartbeat.stop()
        for step in (self._maintenance.resign, self._unregister):
            try:
                step()
            except Exception as exc:
                log.warning("could not %s on the way out: %s", step.__name__.strip("_"), exc)

    def _unregister(self) -> None:
        if not self._abandoned:
            self.engine.unregister_worker(self.id)

    # -- plumbing -----------------------------------------------------------------

    def _loop_(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call on the worker's one database thread."""
        assert self._loop is not None
        return await self._loop.run_in_executor(self._db, fn, *args)

    async def _flush(self) -> None:
        moves, notes = self._outbox.take()
        if moves or notes:
            batch = await self._call(self.engine.exchange, moves, notes, None)
            self._count_reports(moves, batch.applied)

    def _count_reports(self, moves: Sequence[Move], applied: Sequence[bool]) -> None:
        self._outbox.written(move.job_id for move in moves)
        if self.settings.observer is not None:
            self.settings.observer.moved([m for m, ok in zip(moves, applied, strict=True) if ok])
            refused = [m.job_id for m, ok in zip(moves, applied, strict=True) if not ok]
            if refused:
                self.settings.observer.lost(refused)
        for move, ok in zip(moves, applied, strict=True):
            self._tracing.written(move.job_id, refused=not ok)
            if not ok:
                self.report.refused += 1
                log.warning(
                    "job %d: %s refused, this worker no longer holds its lease",
                    move.job_id,
                    move.trigger,
                )
                continue
            self._job_log.moved(move)
            state = move.to_state.value
            self.report.by_state[state] = self.report.by_state.get(state, 0) + 1
            if move.trigger == Trigger.COMPLETED:
                self.report.completed += 1
            elif move.trigger == Trigger.RELEASED:
                self.report.released += 1
            elif move.to_state is State.FAILED:
                self.report.failed += 1

    def _wake_threadsafe(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            wake.set()
        else:
            loop.call_soon_threadsafe(wake.set)

    def _install_signal_handlers(self) -> None:
        if (
            not self.settings.handle_signals
            or threading.current_thread() is not threading.main_thread()
        ):
            return
        assert self._loop is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.add_signal_handler(sig, self._on_signal, sig)

    def _remove_signal_handlers(self) -> None:
        if self.settings.handle_signals and threading.current_thread() is threading.main_thread():
            assert self._loop is not None
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopping:
            log.warning("second %s: stopping now", sig.name)
            self._stop_what_can_stop()
            self.abandon()
            return
        log.warning(
            "%s: finishing running jobs (up to %.0fs), claiming no more",
            sig.name,
            self.settings.shutdown_grace,
        )
        self.stop()


class Pace:
    """How many runs this worker ends per second, lately: the pace at which its
    slots free up for jobs claimed ahead (an average over about the last second).

    The clock starts with the first run, and again with the first after a
    window in which no run ended (what came before says nothing of the runs to
    come). The first figure comes once ``enough`` runs have ended (the worker
    passes two slots' worth, at least 20: runs that started as others ended, not
    only the first fill of its slots; quick handlers end that many within
    milliseconds) or a quarter of the window has passed, whichever is first;
    then one every quarter window, averaged with the last. Ends, not
    starts: the first slots' worth of jobs start at once, which says nothing of
    the pace (a worker would claim ahead for handlers that have not shown how
    long they take), and quick ones would wait a quarter second, claiming a
    slots' worth at a time, for a first figure (a burst of 20,000 no-op jobs on
    PostgreSQL: 150 of them in its first 0.25 s)."""

    WINDOW = 1.0

    def __init__(self, enough: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._enough = max(1, enough)
        self._clock = clock
        self._rate = 0.0
        self._count = 0
        self._since: float | None = None

    def started(self) -> None:
        now = self._clock()
        if self._since is None or now - self._since > self.WINDOW:
            self._since, self._count, self._rate = now, 0, 0.0

    def ended(self) -> None:
        if self._since is None:
            return
        self._count += 1
        now = self._clock()
        elapsed = now - self._since
        first = self._rate == 0.0 and self._count >= self._enough
        if (first or elapsed >= self.WINDOW / 4) and elapsed > 0:
            fresh = self._count / elapsed
            self._rate = fresh if self._rate == 0.0 else 0.5 * self._rate + 0.5 * fresh
            self._count = 0
            self._since = now

    def per_second(self) -> float:
        if self._since is None or self._clock() - self._since > self.WINDOW:
            return 0.0  # nothing ended lately: no pace to go by
        return self._rate


def _asked(check: Recheck) -> bool:
    return check.cancel_requested or check.pause_requested or check.queue_paused


def _by_job(moves: Sequence[Move]) -> list[list[Move]]:
    """Moves grouped by job, in order: one job's moves stand or fall together."""
    groups: dict[int, list[Move]] = {}
    for move in moves:
        groups.setdefault(move.job_id, []).append(move)
    return list(groups.values())
