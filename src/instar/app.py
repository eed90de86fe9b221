"""The user's API: register handlers, enqueue jobs, inspect and steer them.

The engine underneath is synchronous (both database drivers are); the
``*_async`` methods run the same calls in a thread, so there is one
implementation of every operation and no async twin to keep in step.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, overload

from instar.clock import Clock, SystemClock
from instar.engine import Engine
from instar.errors import ConfigurationError, InvalidOption, UnknownJob
from instar.jobs import JobDefinition, JobOptions
from instar.lifecycle import State, is_terminal
from instar.models import Awakeable, Event, Job, QueueStats
from instar.payload import DEFAULT_MAX_BYTES, encode
from instar.retry import Retry
from instar.store import database_url, open_store
from instar.store.contract import JobFilter, NewJob
from instar.worker.loop import Worker, WorkerReport, WorkerSettings


class App:
    """One Instar application: a database and the handlers registered on it.

    ``App()`` uses ``$INSTAR_DATABASE`` or ``./instar.db``; ``App(url)`` takes
    ``sqlite:///path.db``. The database is opened (and migrated) on first use.
    """

    def __init__(
        self,
        database: str | None = None,
        *,
        max_payload_bytes: int = DEFAULT_MAX_BYTES,
        clock: Clock | None = None,
    ) -> None:
        self.database = database_url(database)
        self.max_payload_bytes = max_payload_bytes
        self.clock: Clock = clock or SystemClock()
        self.registry: dict[str, JobDefinition] = {}
        self._engine: Engine | None = None
        self._open_lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._open_lock:
                if self._engine is None:
                    self._engine = Engine(open_store(self.database), self.clock)
        return self._engine

    def migrate(self) -> int:
        """Create or upgrade the schema; returns its version (also done on first use)."""
        return self.engine.store.migrate()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.store.close()
            self._engine = None

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- registering ------------------------------------------------------------

    @overload
    def job(self, fn: Callable[..., Any], /) -> JobDefinition: ...

    @overload
    def job(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        lease: float = 30.0,
        timeout: float | None = None,
        retry: Retry | None = None,
        priority: int = 0,
        pause_timeout: float = 86400.0,
        service: bool = False,
    ) -> Callable[[Callable[..., Any]], JobDefinition]: ...

    def job(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        lease: float = 30.0,
        timeout: float | None = None,
        retry: Retry | None = None,
        priority: int = 0,
        pause_timeout: float = 86400.0,
        service: bool = False,
    ) -> JobDefinition | Callable[[Callable[..., Any]], JobDefinition]:
        """Register a handler: ``@app.job`` or ``@app.job(queue=..., retry=...)``."""
        options = JobOptions(
            queue, lease, timeout, retry or Retry(), priority, pause_timeout, service
        )

        def register(handler: Callable[..., Any]) -> JobDefinition:
            job_name = name or f"{handler.__module__}.{handler.__qualname__}"
            if job_name in self.registry:
                raise ConfigurationError(f"a job named {job_name!r} is registered already")
            definition = JobDefinition(self, handler, job_name, options)
            self.registry[job_name] = definition
            return definition

        return register(fn) if fn is not None else register

    def service(
        self, *, name: str | None = None, queue: str = "services", lease: float = 10.0
    ) -> Callable[[Callable[..., Any]], JobDefinition]:
        """Register a long-running service: it calls ``ctx.ready()`` once up
        (running -> serving), keeps its lease by heartbeat, and returns when
        ``ctx.stopping`` turns true after ``app.stop(id)``."""
        return self.job(
            name=name, queue=queue, lease=lease, retry=Retry(max_attempts=1), service=True
        )

    def definition(self, job: JobDefinition | str) -> JobDefinition:
        if isinstance(job, JobDefinition):
            return job
        found = self.registry.get(job)
        if found is None:
            by_short_name = [d for d in self.registry.values() if d.fn.__name__ == job]
            if len(by_short_name) == 1:
                return by_short_name[0]
            raise UnknownJob(job, list(self.registry))
        return found

    # -- enqueueing -------------------------------------------------------------

    def enqueue(
        self,
        job: JobDefinition | str,
        args: Mapping[str, Any] | None = None,
        *,
        delay: float | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        key: str | None = None,
        after: Sequence[int | Job] = (),
        connection: Any = None,
        actor: str | None = "app",
    ) -> Job:
        """Create one job: ``ready``, ``scheduled`` when it starts later, or
        ``pending`` until every job in ``after`` has completed. With
        ``connection=`` (a psycopg connection, PostgreSQL only) the job is part
        of the caller's transaction: visible to workers only once it commits."""
        spec = self.new_job(
            job,
            args or {},
            delay=delay,
            run_at=run_at,
            priority=priority,
            queue=queue,
            key=key,
            after=after,
        )
        return self.engine.enqueue([spec], actor, connection)[0]

    def enqueue_many(
        self,
        job: JobDefinition | str,
        many_args: Iterable[Mapping[str, Any]],
        *,
        delay: float | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        actor: str | None = "app",
    ) -> list[Job]:
        """Create many jobs of one kind in one transaction: all of them or none."""
        specs = self.new_jobs(
            job, many_args, delay=delay, run_at=run_at, priority=priority, queue=queue
        )
        return self.engine.enqueue(specs, actor) if specs else []

    async def enqueue_async(
        self, job: JobDefinition | str, args: Mapping[str, Any] | None = None, **options: Any
    ) -> Job:
        return await asyncio.to_thread(self.enqueue, job, args, **options)

    def new_job(
        self,
        job: JobDefinition | str,
        args: Mapping[str, Any],
        *,
        key: str | None = None,
        parent_id: int | None = None,
        **options: Any,
    ) -> NewJob:
        """Check one job's arguments and options and describe it for the engine."""
        return self.new_jobs(job, [args], key=key, parent_id=parent_id, **options)[0]

    def new_jobs(
        self,
        job: JobDefinition | str,
        many_args: Iterable[Mapping[str, Any]],
        *,
        delay: float | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        key: str | None = None,
        after: Sequence[int | Job] = (),
        parent_id: int | None = None,
    ) -> list[NewJob]:
        """Check jobs of one kind and describe them for the engine; what they
        share (options, start time, dependencies) is worked out once."""
        definition = self.definition(job)
        start = self._start_time(delay, run_at)
        options = definition.options
        if queue is not None and not queue:
            raise InvalidOption("queue must be a non-empty name")
        parents = tuple(p.id if isinstance(p, Job) else int(p) for p in after)
        state = State.READY
        if parents:
            state = State.PENDING
        elif start is not None:
            state = State.SCHEDULED
        what = f"arguments of job {definition.name!r}"
        specs = []
        for args in many_args:
            if not isinstance(args, Mapping):
                raise InvalidOption(
                    f"job arguments must be a mapping of names to values, got {type(args).__name__}"
                )
            definition.check_arguments(args)
            args_dict = dict(args)
            specs.append(
                NewJob(
                    name=definition.name,
                    queue=queue or options.queue,
                    state=state,
                    priority=options.priority if priority is None else int(priority),
                    max_attempts=options.retry.max_attempts,
                    args=args_dict,
                    args_json=encode(args_dict, what=what, max_bytes=self.max_payload_bytes),
                    key=key,
                    run_at=start,
                    lease_seconds=options.lease,
                    pause_timeout=options.pause_timeout,
                    after=parents,
                    parent_id=parent_id,
                )
            )
        return specs

    def _start_time(self, delay: float | None, run_at: datetime | None) -> float | None:
        """Epoch seconds to start at, or None to start now."""
        if delay is not None and run_at is not None:
            raise InvalidOption("give delay or run_at, not both")
        if delay is not None:
            if delay < 0:
                raise InvalidOption(f"delay must not be negative, got {delay}")
            return self.clock.now() + delay if delay > 0 else None
        if run_at is not None:
            if not isinstance(run_at, datetime):
                raise InvalidOption(f"run_at must be a datetime, got {type(run_at).__name__}")
            if run_at.tzinfo is None or run_at.utcoffset() is None:
                raise InvalidOption(
                    f"run_at {run_at.isoformat()} has no time zone; pass an aware datetime, "
                    "e.g. datetime.now(timezone.utc) + timedelta(minutes=5)"
                )
            start = run_at.timestamp()
            return start if start > self.clock.now() else None
        return None

    # -- reading ----------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        return self.engine.get(job_id)

    def jobs(
        self,
        state: State | str | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs newest first, filtered by any of state, queue and name."""
        return self.engine.jobs(JobFilter(_state(state), queue, name, limit))

    def history(self, job_id: int) -> list[Event]:
        """The job's timeline, oldest first."""
        return self.engine.history(job_id)

    def counts(self) -> dict[State, int]:
        return self.engine.store.count_by_state()

    def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """Block until the job is terminal or paused; TimeoutError after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = 0.005
        while True:
            job = self.get(job_id)
            if is_terminal(job.state) or job.state is State.PAUSED:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job.state} after {timeout}s")
            time.sleep(
                interval
                if deadline is None
                else min(interval, max(0.0, deadline - time.monotonic()))
            )
            interval = min(interval * 2, 0.2)

    # -- operator verbs -------------------------------------------------------------

    def cancel(self, job_id: int, actor: str | None = "app") -> Job:
        """Cancel a job that is not running at once; ask a running one's worker to stop it."""
        return self.engine.cancel(job_id, actor)

    def retry(self, job_id: int, actor: str | None = "app") -> Job:
        """Run a failed job again, with a fresh count of attempts."""
        return self.engine.retry(job_id, actor)

    def pause(self, job_id: int, actor: str | None = "app") -> Job:
        """Pause a waiting job at once, a running one at its next checkpoint, step
        or progress call (where the handler can stop cleanly)."""
        return self.engine.pause(job_id, actor)

    def resume(self, job_id: int, actor: str | None = "app") -> Job:
        return self.engine.resume(job_id, actor)

    def stop(self, job_id: int, actor: str | None = "app") -> Job:
        """Ask a serving service job to stop: serving -> stopping -> completed."""
        return self.engine.stop(job_id, actor)

    def resolve(self, awakeable_id: str, value: Any = None, actor: str | None = "app") -> Awakeable:
        """Answer a job waiting in ``ctx.await_signal``: it gets ``value``."""
        value_json = encode(value, what="the signal value", max_bytes=self.max_payload_bytes)
        return self.engine.resolve(awakeable_id, value_json, actor)

    def reject(self, awakeable_id: str, reason: str, actor: str | None = "app") -> Awakeable:
        """Refuse a signal: ``ctx.await_signal`` raises SignalRejected(reason)."""
        return self.engine.reject(awakeable_id, reason, actor)

    def pause_queue(self, queue: str) -> bool:
        """Claim nothing more from ``queue`` until it is resumed; running jobs go on."""
        return self.engine.pause_queue(queue)

    def resume_queue(self, queue: str) -> bool:
        return self.engine.resume_queue(queue)

    def queues(self) -> list[QueueStats]:
        """Every queue with its counts by state, and whether it is paused."""
        return self.engine.store.queue_stats()

    def awakeables(self, job_id: int) -> list[Awakeable]:
        return self.engine.store.awakeables_of(self.get(job_id).id)

    def children(self, job_id: int) -> list[Job]:
        return self.engine.store.children_of(self.get(job_id).id)

    def dependencies(self, job_id: int) -> list[Job]:
        return self.engine.store.dependencies_of(self.get(job_id).id, "after")

    # -- working ----------------------------------------------------------------

    def worker(
        self,
        queues: Sequence[str] | None = None,
        concurrency: int = 10,
        burst: bool = False,
        **settings: Any,
    ) -> Worker:
        return Worker(
            self.engine,
            self.registry,
            WorkerSettings(
                queues=list(queues) if queues else None,
                concurrency=concurrency,
                burst=burst,
                max_payload_bytes=self.max_payload_bytes,
                **settings,
            ),
        )

    def run_worker(
        self,
        queues: Sequence[str] | None = None,
        concurrency: int = 10,
        burst: bool = False,
        **settings: Any,
    ) -> WorkerReport:
        """Run a worker in this thread until stopped (or, with burst, until idle)."""
        return asyncio.run(self.worker(queues, concurrency, burst, **settings).run())


def _state(state: State | str | None) -> State | None:
    if state is None or isinstance(state, State):
        return state
    try:
        return State(state)
    except ValueError:
        raise InvalidOption(
            f"unknown state {state!r}; states are {', '.join(s.value for s in State)}"
        ) from None
