"""The worker: report finished jobs and claim new ones, run them, repeat.

One loop, read top to bottom in ``run``:

1. hand the finished runs and queued progress to the engine and claim as
   many ready jobs as there are free slots, all in one transaction;
2. start each claimed job as a task (sync handlers go to a thread pool);
3. wait until a job finishes, a job is enqueued in this process, another
   process commits (SQLite's ``data_version``), or the poll interval passes.

Beside it run the heartbeat (one statement extends every lease this worker
holds and brings back cancel requests) and maintenance (timers, rescue).
On SIGINT/SIGTERM the worker stops claiming, lets running jobs finish within
``shutdown_grace``, and hands the rest back to ``ready``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from instar.context import Context
from instar.control import CancelNow, LeaseLost, PauseNow, Suspend
from instar.engine import (
    Cancelled,
    Engine,
    Outcome,
    Paused,
    Raised,
    Released,
    Returned,
    Suspended,
    outcome_moves,
    refused_report_moves,
)
from instar.errors import Fatal, StoreRefused, UnknownJob
from instar.lifecycle import State
from instar.maintenance.runner import Maintenance
from instar.models import Job
from instar.payload import DEFAULT_MAX_BYTES
from instar.registry import JobDefinition
from instar.retry import Retry
from instar.store.contract import ClaimRequest, Move, Note
from instar.vocabulary import Trigger
from instar.worker.executor import run_handler
from instar.worker.job_log import JobLog

log = logging.getLogger("instar.worker")

T = TypeVar("T")


@dataclass
class WorkerSettings:
    queues: Sequence[str] | None = None
    concurrency: int = 10
    burst: bool = False
    poll_interval: float = 0.005
    fallback_poll_interval: float = 1.0
    maintenance_interval: float = 0.2
    shutdown_grace: float = 10.0
    cancel_grace: float = 10.0
    handle_signals: bool = True
    max_payload_bytes: int = DEFAULT_MAX_BYTES


@dataclass
class WorkerReport:
    completed: int = 0
    failed: int = 0
    released: int = 0
    refused: int = 0
    by_state: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        return (
            f"{self.completed} completed, {self.failed} failed, "
            f"{self.released} released, {self.refused} refused"
        )


@dataclass
class _Run:
    job: Job
    ctx: Context
    task: asyncio.Task[None] | None = None


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        engine: Engine,
        registry: Mapping[str, JobDefinition],
        settings: WorkerSettings | None = None,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.settings = settings or WorkerSettings()
        if self.settings.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.settings.concurrency}")
        self.id = new_worker_id()
        self.report = WorkerReport()
        self._running: dict[int, _Run] = {}
        self._buffer: deque[Job] = deque()  # claimed ahead, not started yet
        self._backlog = False
        self._failures = 0  # consecutive batches the database refused
        self._outbox_moves: list[Move] = []
        self._outbox_notes: list[Note] = []
        self._outbox_lock = threading.Lock()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wake: asyncio.Event | None = None
        self._db = ThreadPoolExecutor(1, thread_name_prefix="instar-db")
        self._threads = ThreadPoolExecutor(
            self.settings.concurrency, thread_name_prefix="instar-job"
        )
        self._maintenance = Maintenance(engine, self.id)
        self._job_log = JobLog()

    # -- the loop -------------------------------------------------------------

    async def run(self) -> WorkerReport:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        unsubscribe = self.engine.subscribe(self._wake_threadsafe)
        self._install_signal_handlers()
        helpers = [
            asyncio.create_task(self._heartbeat_loop()),
            asyncio.create_task(self._maintenance_loop()),
        ]
        marker = await self._call(self.engine.read.change_marker)
        shutdown_deadline: float | None = None
        log.info("worker %s started (concurrency %d)", self.id, self.settings.concurrency)
        try:
            while True:
                if self._stopping:
                    self._release_buffered()
                    shutdown_deadline = (
                        shutdown_deadline or time.monotonic() + self.settings.shutdown_grace
                    )
                    if self._running and time.monotonic() >= shutdown_deadline:
                        self._release_all()
                    if not self._running:
                        break
                self._start_buffered()
                self._job_log.flush()
                wanted = self._claims_wanted()
                moves, notes = self._take_outbox()
                if moves or notes or wanted:
                    # Tasks started above run while this exchange is in the database thread.
                    claim = ClaimRequest(self.id, wanted, self.settings.queues) if wanted else None
                    try:
                        batch = await self._call(self.engine.exchange, moves, notes, claim)
                    except StoreRefused as refused:
                        # One report the database cannot store must not hold back the rest.
                        log.warning(
                            "a batch was refused (%s); writing its reports one by one", refused
                        )
                        await self._call(self._write_one_by_one, moves, notes)
                        continue
                    except Exception:
                        await self._retry_later(moves, notes)
                        continue
                    self._failures = 0
                    self._count_reports(moves, batch.applied)
                    self._buffer.extend(batch.claimed)
                    self._backlog = bool(wanted) and len(batch.claimed) == wanted
                    if batch.claimed or moves or notes:
                        continue
                if self._outbox_has_items():
                    continue
                if self.settings.burst and not self._running and not self._stopping:
                    if not (await self._call(self._maintenance.run_once)).changed:
                        break
                    continue
                marker = await self._idle(marker, free=wanted > 0)
            await self._flush()
            self._job_log.flush()
        finally:
            unsubscribe()
            self._remove_signal_handlers()
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._db.shutdown(wait=True)
        log.info("worker %s stopped: %s", self.id, self.report)
        return self.report

    async def _retry_later(self, moves: list[Move], notes: list[Note]) -> None:
        """The database refused a batch (locked past the busy timeout, disk full,
        gone): keep its reports for the next try and back off, up to 5 s."""
        self._failures += 1
        delay = min(5.0, 0.05 * 2**self._failures)
        error = sys.exc_info()[1]
        log.warning("writing a batch failed (%s); trying again in %.2fs", error, delay)
        with self._outbox_lock:
            self._outbox_moves[:0] = moves
            self._outbox_notes[:0] = notes
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
            with self._outbox_lock:
                self._outbox_moves[:0] = retry_moves
                self._outbox_notes[:0] = retry_notes

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
            log.error("job %d: even its failure could not be stored: %s", group[0].job_id, exc)

    def _claims_wanted(self) -> int:
        """Free slots, plus as many again while the queue has a backlog: jobs
        claimed ahead wait in the buffer, so the next batch runs while this
        one's results are being committed."""
        if self._stopping:
            return 0
        held = len(self._running) + len(self._buffer)
        prefetch = self.settings.concurrency if self._backlog else 0
        return max(0, self.settings.concurrency + prefetch - held)

    def _start_buffered(self) -> None:
        while self._buffer and len(self._running) < self.settings.concurrency:
            self._start(self._buffer.popleft())

    def stop(self) -> None:
        """Stop claiming; let running jobs finish within the shutdown grace."""
        self._stopping = True
        self._wake_threadsafe()

    async def _idle(self, marker: int, *, free: bool) -> int:
        """Sleep until there may be work: a wake-up, another process's commit, or
        the fallback poll (a wake-up that was missed costs at most that long)."""
        assert self._wake is not None
        give_up = time.monotonic() + self.settings.fallback_poll_interval
        while not self._wake.is_set():
            if free and time.monotonic() >= give_up:
                return marker
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
            except TimeoutError:
                if self._stopping:
                    break  # back to the loop, which watches the shutdown deadline
                if free:
                    latest = await self._call(self.engine.read.change_marker)
                    if latest != marker:
                        return latest
        self._wake.clear()
        return marker

    # -- running one job ------------------------------------------------------------

    def _start(self, job: Job) -> None:
        ctx = Context(
            job,
            self.id,
            self._report,
            self.engine,
            max_payload_bytes=self.settings.max_payload_bytes,
        )
        run = _Run(job, ctx)
        self._running[job.id] = run
        self._job_log.started(job)
        run.task = asyncio.create_task(self._execute(run), name=f"instar-job-{job.id}")
        run.task.add_done_callback(functools.partial(self._finished, run))

    def _finished(self, run: _Run, task: asyncio.Task[None]) -> None:
        """A run's task ended. If it ended by an error of Instar's own (an outcome it
        could not even plan), the job still ends, failed, and the error is logged:
        nothing is left running unseen, no exception goes unretrieved."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        assert error is not None
        log.error("job %d: the worker could not end its run: %r", run.job.id, error)
        if self._running.get(run.job.id) is run:
            try:
                self._end_run(run, Retry(max_attempts=1), Raised(_fatal(error)))
            except Exception as exc:
                log.error("job %d: left to its lease: %r", run.job.id, exc)
                self._running.pop(run.job.id, None)

    async def _execute(self, run: _Run) -> None:
        job = run.job
        definition = self.registry.get(job.name)
        if definition is None:
            error = _fatal(UnknownJob(job.name, list(self.registry)))
            self._end_run(run, Retry(), Raised(error))
            return
        outcome: Outcome
        try:
            outcome = Returned(await run_handler(definition, run.ctx, job.args, self._threads))
        except asyncio.CancelledError:
            if not run.ctx.cancelled:
                return  # released at shutdown: _release_all has reported it
            outcome = Cancelled()
        except Suspend as suspension:
            outcome = Suspended(
                suspension.wake_at, suspension.detail, suspension.awaiting, suspension.joining
            )
        except PauseNow:
            outcome = Paused()
        except CancelNow:
            outcome = Cancelled()
        except LeaseLost:
            log.warning("job %d: this worker lost its lease; dropping the run", job.id)
            self._running.pop(job.id, None)
            return
        except Exception as error:  # a failure of user code is an outcome, not a crash
            outcome = Raised(error)
        if run.ctx.cancelled:
            outcome = Cancelled()
        self._end_run(run, definition.options.retry, outcome)

    def _end_run(self, run: _Run, retry: Retry, outcome: Outcome) -> None:
        """Queue the move that ends a run, once: the first outcome wins."""
        if self._running.get(run.job.id) is not run:
            return
        del self._running[run.job.id]
        self._queue_outcome(run.ctx.job, retry, outcome)

    def _queue_outcome(self, job: Job, retry: Retry, outcome: Outcome) -> None:
        moves = outcome_moves(
            job,
            outcome,
            retry=retry,
            now=self.engine.clock.now(),
            max_payload_bytes=self.settings.max_payload_bytes,
        )
        with self._outbox_lock:
            self._outbox_moves.extend(moves)
        self._wake_threadsafe()

    def _report(self, entry: Note | Move) -> None:
        """Called from handlers, in any thread: queue a note (or a service's move
        to serving) for the next batch; entries that arrive while a batch is
        being written share the next one."""
        with self._outbox_lock:
            if isinstance(entry, Move):
                self._outbox_moves.append(entry)
            else:
                self._outbox_notes.append(entry)
        self._wake_threadsafe()

    def _release_all(self) -> None:
        """Shutdown grace is over: hand every unfinished job back to ready."""
        for run in list(self._running.values()):
            self._end_run(run, Retry(), Released())
            if run.task is not None:
                run.task.cancel()

    def _release_buffered(self) -> None:
        """Jobs claimed ahead but never started go back to ready, attempt uncounted."""
        while self._buffer:
            self._queue_outcome(self._buffer.popleft(), Retry(), Released())

    def _cancel_requested(self, job_id: int) -> None:
        waiting = next((job for job in self._buffer if job.id == job_id), None)
        if waiting is not None:
            self._buffer.remove(waiting)
            self._queue_outcome(waiting, Retry(), Cancelled())
            return
        run = self._running.get(job_id)
        if run is None or run.ctx.cancelled:
            return
        run.ctx.request_cancel()
        definition = self.registry.get(run.job.name)
        if run.task is not None and definition is not None and definition.is_async:
            run.task.cancel()
        assert self._loop is not None
        self._loop.call_later(self.settings.cancel_grace, self._force_cancel, run)

    def _force_cancel(self, run: _Run) -> None:
        """The handler ignored the cancel request for the whole grace period."""
        if self._running.get(run.job.id) is run:
            log.warning("job %d ignored its cancel request for the grace period", run.job.id)
            self._end_run(run, Retry(), Cancelled())

    # -- helpers running beside the loop --------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_interval())
            if not self._running and not self._buffer:
                continue
            try:
                ids = [*self._running, *(job.id for job in self._buffer)]
                held = await self._call(self.engine.heartbeat, self.id, ids)
            except Exception as exc:
                log.warning("heartbeat failed (%s); will try again", exc)
                continue
            for job in held:
                if job.cancel_requested:
                    self._cancel_requested(job.job_id)
                    continue
                run = self._running.get(job.job_id)
                if run is not None:
                    run.ctx.set_state(job.state)
                    if job.pause_requested:
                        run.ctx.request_pause()

    def _heartbeat_interval(self) -> float:
        """A third of the shortest lease held, and at most a second so cancels arrive quickly."""
        leases = [run.job.lease_seconds for run in self._running.values()]
        leases += [job.lease_seconds for job in self._buffer]
        return min([1.0, *(lease / 3 for lease in leases)])

    async def _maintenance_loop(self) -> None:
        while True:
            try:
                report = await self._call(self._maintenance.run_if_leader)
            except Exception as exc:
                log.warning("maintenance pass failed (%s); will try again", exc)
            else:
                if report is not None and report.changed:
                    self._wake_threadsafe()
            await asyncio.sleep(self.settings.maintenance_interval)

    # -- plumbing -----------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call on the worker's one database thread."""
        assert self._loop is not None
        return await self._loop.run_in_executor(self._db, fn, *args)

    def _take_outbox(self) -> tuple[list[Move], list[Note]]:
        with self._outbox_lock:
            moves, self._outbox_moves = self._outbox_moves, []
            notes, self._outbox_notes = self._outbox_notes, []
        return moves, notes

    def _outbox_has_items(self) -> bool:
        with self._outbox_lock:
            return bool(self._outbox_moves or self._outbox_notes)

    async def _flush(self) -> None:
        moves, notes = self._take_outbox()
        if moves or notes:
            batch = await self._call(self.engine.exchange, moves, notes, None)
            self._count_reports(moves, batch.applied)

    def _count_reports(self, moves: Sequence[Move], applied: Sequence[bool]) -> None:
        for move, ok in zip(moves, applied, strict=True):
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
            log.warning("second %s: releasing running jobs now", sig.name)
            self._release_all()
        else:
            log.warning(
                "%s: finishing running jobs (up to %.0fs), claiming no more",
                sig.name,
                self.settings.shutdown_grace,
            )
        self.stop()


def _by_job(moves: Sequence[Move]) -> list[list[Move]]:
    """Moves grouped by job, in order: one job's moves stand or fall together."""
    groups: dict[int, list[Move]] = {}
    for move in moves:
        groups.setdefault(move.job_id, []).append(move)
    return list(groups.values())


def _fatal(error: BaseException) -> Exception:
    """Wrap an error that no retry can fix (an unregistered job name)."""
    try:
        message = str(error)
    except Exception:
        message = f"<an unreadable {type(error).__qualname__}>"
    fatal = Fatal(message)
    fatal.__cause__ = error
    return fatal
