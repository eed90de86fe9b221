"""The user's API: register handlers, enqueue jobs, inspect and steer them.

The App binds together a database (opened on first use), a registry of
handlers, the engine that writes (``Engine``, with the operator's verbs in
``Operator``) and the read API beside it (``Reader``, the event feed). It
holds no SQL and no lifecycle rule of its own.

The engine underneath is synchronous (both database drivers are); the
``*_async`` methods run the same calls in a thread, so there is one
implementation of every operation and no async twin to keep in step.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from instar.clock import Clock, DatabaseClock
from instar.engine import Engine, Operator, Reader
from instar.engine.feed import EventFeed
from instar.errors import ConfigurationError, InvalidOption
from instar.lifecycle import JOBS, State, is_terminal
from instar.listeners import Listener, Listeners, Subscription
from instar.maintenance.pruning import PruneReport, prune_all
from instar.models import Awakeable, Event, FlowLimitInfo, Job, QueueStats
from instar.payload import DEFAULT_MAX_BYTES, encode
from instar.periodic import CatchUp, Schedule, ScheduleInfo, slot_time, takes_slot
from instar.registry import (
    JobDefinition,
    JobOptions,
    Placement,
    Registry,
    new_jobs,
    start_time,
)
from instar.registry.flow import Limit, Rate, concurrency_limit, rate_limit
from instar.registry.limits import check_id, check_instant, check_limit, check_name
from instar.retention import MAX_RETENTION, Period, Retention
from instar.retry import Retry
from instar.store import DEFAULT_DATABASE, open_store
from instar.store.contract import ArgsMatch, EventFilter, JobFilter, WorkerInfo
from instar.store.urls import redact
from instar.tracing import carrier
from instar.vocabulary import Actor
from instar.worker.loop import Worker, WorkerReport, WorkerSettings

if TYPE_CHECKING:
    from instar.machines import MachineRuntime, Machines
    from instar.store.contract import Transaction

log = logging.getLogger("instar.app")


class DatabaseSource(enum.StrEnum):
    """Where an App's database URL came from, strongest first: the command line's
    ``--database``, a URL written in code (``App(url)``), ``$INSTAR_DATABASE``, the
    default ``./instar.db``."""

    COMMAND_LINE = "--database"
    CODE = "written in code"
    ENVIRONMENT = "$INSTAR_DATABASE"
    DEFAULT = "the default"


ENQUEUE_OPTIONS = frozenset({"delay", "run_at", "priority", "queue", "key", "after", "connection"})
"""Keywords of ``BoundJob.enqueue`` that are options, not the handler's arguments."""


class BoundJob(JobDefinition):
    """A definition registered on an App: ``resize.enqueue(path=...)`` creates a job."""

    def __init__(self, app: App, definition: JobDefinition) -> None:
        super().__init__(definition.fn, definition.name, definition.options)
        self.app = app

    def enqueue(self, **kwargs: Any) -> Job:
        """Create one job; options (delay, run_at, priority, queue, key, after,
        connection) are keywords too."""
        args, options = _split_options(kwargs)
        return self.app.enqueue(self, args, **options)

    async def enqueue_async(self, **kwargs: Any) -> Job:
        args, options = _split_options(kwargs)
        return await self.app.enqueue_async(self, args, **options)


_PLACEMENT_OPTIONS = ("delay", "run_at", "priority", "queue", "key", "after")
"""The options of ``enqueue`` that place a job, in ``App._placement``'s order."""


class App:
    """One Instar application: a database and the handlers registered on it.

    ``App()`` uses ``$INSTAR_DATABASE`` or ``./instar.db``; ``App(url)`` takes
    ``sqlite:///path.db`` or ``postgresql://...``. The database is opened (and
    migrated) on first use. ``read_only=True`` opens it for reading only:
    nothing is created, migrated or written (see ``open_store``).

    One rule everywhere: a URL written in code wins over ``$INSTAR_DATABASE``
    (which is only the default of ``App()``); when both are set and differ, a
    warning on the ``instar.app`` logger says which is used. Only ``instar ...
    --database`` on the command line overrides a URL written in code
    (``use_database``). ``database_source`` says where the URL came from.
    """

    def __init__(
        self,
        database: str | None = None,
        *,
        max_payload_bytes: int = DEFAULT_MAX_BYTES,
        clock: Clock | None = None,
        read_only: bool = False,
        retention: Retention | None = None,
    ) -> None:
        environment = os.environ.get("INSTAR_DATABASE") or None
        self.database_source: DatabaseSource
        if database:
            self.database, self.database_source = database, DatabaseSource.CODE
            if environment is not None and environment != database:
                log.warning(
                    "App(%r) uses the database written in code; $INSTAR_DATABASE=%r is ignored",
                    redact(database),
                    redact(environment),
                )
        elif environment is not None:
            self.database, self.database_source = environment, DatabaseSource.ENVIRONMENT
        else:
            self.database, self.database_source = DEFAULT_DATABASE, DatabaseSource.DEFAULT
        self.read_only = read_only
        self.max_payload_bytes = max_payload_bytes
        self.retention = retention or Retention()
        """How long finished jobs are kept (``instar.Retention``); the workers'
        maintenance leader prunes older ones."""
        self.clock: Clock = clock or DatabaseClock()
        self.registry = Registry()
        self._engine: Engine | None = None
        self._open_lock = threading.Lock()
        self._subscriptions: list[Subscription] = []
        self._listeners: Listeners | None = None
        self._runtime: MachineRuntime | None = None

    @cached_property
    def machines(self) -> Machines:
        """User-defined durable state machines (``instar.machines``). Their code
        is imported on first use: an App without machines does not load it."""
        from instar.machines import Machines

        return Machines(self._machine_runtime)

    @property
    def _machine_runtime(self) -> MachineRuntime:
        """Built once, under the lock (two runtimes would each keep their own
        registered machines); ``cached_property`` takes no lock from Python 3.12 on."""
        if self._runtime is None:
            with self._open_lock:
                if self._runtime is None:
                    from instar.machines import MachineRuntime

                    self._runtime = MachineRuntime(lambda: self.engine, self.registry)
        return self._runtime

    def _deliver_replies(self, tx: Transaction, job_ids: Sequence[int]) -> None:
        """The engine's hook for jobs that machines await (none without machines)."""
        self._machine_runtime.deliver_replies(tx, job_ids)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._open_lock:
                if self._engine is None:
                    store = open_store(self.database, read_only=self.read_only)
                    self._engine = Engine(store, self.clock)
                    self._engine.replies = self._deliver_replies
                    if self._subscriptions:
                        self._listeners = Listeners(self._engine, self._subscriptions)
        return self._engine

    @property
    def listeners(self) -> Listeners:
        """What calls the transition listeners (``on_transition``); its
        ``wait_idle()`` waits until every move committed so far was heard."""
        engine = self.engine
        if self._listeners is None:
            self._listeners = Listeners(engine, self._subscriptions)
        return self._listeners

    @property
    def reader(self) -> Reader:
        """The read API: jobs, timelines, durable state."""
        return self.engine.read

    @property
    def operator(self) -> Operator:
        """The operator's verbs, written through the engine."""
        return Operator(self.engine)

    def use_database(self, url: str, source: DatabaseSource = DatabaseSource.COMMAND_LINE) -> None:
        """Work on ``url`` from now on (the command line's ``--database``); an open
        database is closed first. Nothing is opened until first use."""
        self.close()
        self.database, self.database_source = url, source

    def migrate(self) -> int:
        """Create or upgrade the schema; returns its version (also done on first use)."""
        return self.engine.store.migrate()

    def check(self) -> list[str]:
        """Problems the database finds with its own files (SQLite reads every page:
        seconds on a large file); [] when there are none."""
        return self.engine.store.check()

    def close(self) -> None:
        """Call the transition listeners for the moves committed so far (a few
        seconds at most), then close the database."""
        if self._listeners is not None:
            self._listeners.close()
            self._listeners = None
        if self._engine is not None:
            self._engine.store.close()
            self._engine = None

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- registering ------------------------------------------------------------

    @overload
    def job(self, fn: Callable[..., Any], /) -> BoundJob: ...

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
        concurrency: Limit | int | None = None,
        rate: Rate | None = None,
    ) -> Callable[[Callable[..., Any]], BoundJob]: ...

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
        concurrency: Limit | int | None = None,
        rate: Rate | None = None,
    ) -> BoundJob | Callable[[Callable[..., Any]], BoundJob]:
        """Register a handler: ``@app.job`` or ``@app.job(queue=..., retry=...)``.
        ``concurrency`` (a ``Limit``, or an int: at most that many of these jobs
        run at once) and ``rate`` (a ``Rate``) are its flow control
        (``instar.registry.flow``). ``ConfigurationError`` for an option out of range or
        a limit key naming no parameter of the handler."""
        options = JobOptions(
            queue,
            lease,
            timeout,
            retry or Retry(),
            priority,
            pause_timeout,
            service,
            concurrency=concurrency_limit(concurrency),
            rate=rate_limit(rate),
        )

        def register(handler: Callable[..., Any]) -> BoundJob:
            return self._register(handler, handler, name, options)

        return register(fn) if fn is not None else register

    def _register(
        self,
        handler: Callable[..., Any],
        runs: Callable[..., Any],
        name: str | None,
        options: JobOptions,
    ) -> BoundJob:
        """Register ``runs`` (``handler``, or what wraps it) under ``name``, by
        default the handler's module and qualified name."""
        job_name = name or f"{_module_name(handler.__module__)}.{handler.__qualname__}"
        bound = BoundJob(self, JobDefinition(runs, job_name, options))
        self.registry.add(bound)
        return bound

    def queue(
        self, name: str, *, concurrency: Limit | int | None = None, rate: Rate | None = None
    ) -> None:
        """Declare the flow control of queue ``name`` for the workers of this
        App: at most ``concurrency`` of its jobs running at once, and at most
        ``rate.count`` starts per ``rate.per`` seconds, across every worker that
        runs this code (``instar.registry.flow``). A queue limit has no key: a ``Limit``
        or ``Rate`` with one is refused (``ConfigurationError``), as is a queue
        declared twice."""
        check_name(name, "queue", for_code=True)
        limit, rate = concurrency_limit(concurrency), rate_limit(rate)
        if (limit is not None and limit.key is not None) or (rate is not None and rate.key):
            raise ConfigurationError(
                f"queue {name!r}: a queue's limits count the whole queue; give a key "
                "on a job's limit instead (@app.job(concurrency=Limit(key=...)))"
            )
        if name in self.registry.queue_limits:
            raise ConfigurationError(f"queue {name!r} is declared already")
        self.registry.queue_limits[name] = (limit, rate)

    def periodic(
        self,
        expression: str,
        *,
        tz: str = "UTC",
        catch_up: CatchUp = "latest",
        catch_up_limit: int = 100,
        name: str | None = None,
        queue: str = "default",
        lease: float = 30.0,
        timeout: float | None = None,
        retry: Retry | None = None,
        priority: int = 0,
    ) -> Callable[[Callable[..., Any]], BoundJob]:
        """Register a job that maintenance enqueues at each slot of the cron
        ``expression`` in the time zone ``tz``: one job per slot however many
        workers run, its handler called with ``slot`` (an aware datetime in
        ``tz``). ``catch_up`` ("none", "latest", "all", the most recent
        ``catch_up_limit``) says what happens to the slots missed while no
        worker ran; ``instar.periodic`` gives the rules, daylight-saving changes
        included. ``ConfigurationError`` naming the expression when it, the
        zone or the handler (it needs a ``slot`` parameter) is invalid."""
        schedule = Schedule(expression, tz, catch_up, catch_up_limit)
        options = JobOptions(queue, lease, timeout, retry or Retry(), priority, schedule=schedule)

        def register(handler: Callable[..., Any]) -> BoundJob:
            return self._register(handler, takes_slot(handler, schedule), name, options)

        return register

    def on_transition(
        self,
        to: State | str | None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
    ) -> Callable[[Listener], Listener]:
        """Register ``fn(job, event)``, called after each move of this process
        into ``to`` (None: every move, a job's entry included) has committed,
        for jobs named ``name`` (full or short name) on ``queue`` (None: any):
        ``@app.on_transition(to="failed")``. It runs on a thread of its own with
        the job as it is by then; it cannot change the outcome, and an error it
        raises is logged on ``instar.listeners``, never a reason to fail or
        repeat the job (``instar.listeners``). ``InvalidOption`` for an unknown
        state."""
        state = _state(to)

        def register(fn: Listener) -> Listener:
            subscription = Subscription(fn, state, name, queue)
            self._subscriptions.append(subscription)
            if self._listeners is not None:
                self._listeners.add(subscription)
            elif self._engine is not None:
                self.listeners  # noqa: B018  (starts them with every subscription)
            return fn

        return register

    def schedules(self) -> list[ScheduleInfo]:
        """Every periodic job, of this App's code and of the database: its
        schedule, whether it is paused, its next slot, the last slot handled and
        the last job it made; ``stale`` for a schedule in the database that this
        App's code no longer has (it enqueues nothing more)."""
        now = self.clock.now()
        stored = {s.name: s for s in self.engine.store.schedules()}
        found = []
        for definition in self.registry.values():
            schedule = definition.options.schedule
            if schedule is None:
                continue
            row = stored.pop(definition.name, None)
            after = now if row is None else max(row.last_slot, now)
            found.append(
                ScheduleInfo(
                    definition.name,
                    schedule.expression,
                    schedule.tz,
                    paused=bool(row and row.paused),
                    next_slot=schedule.next_slot(after),
                    last_slot=None if row is None else slot_time(row.last_slot, schedule.tz),
                    last_job_id=None if row is None else row.last_job_id,
                    stale=False,
                )
            )
        for row in stored.values():
            found.append(
                ScheduleInfo(
                    row.name,
                    row.expression,
                    row.tz,
                    paused=row.paused,
                    next_slot=None,
                    last_slot=slot_time(row.last_slot, row.tz),
                    last_job_id=row.last_job_id,
                    stale=True,
                )
            )
        return sorted(found, key=lambda s: s.name)

    def pause_schedule(self, name: str) -> bool:
        """Enqueue nothing for this periodic job until it is resumed (every
        worker sees it; slots that pass meanwhile are skipped); False when it
        was paused already. ``InvalidOption`` when no schedule has that name."""
        return self._set_paused(name, True)

    def resume_schedule(self, name: str) -> bool:
        """Enqueue again from the next slot; False when it was not paused."""
        return self._set_paused(name, False)

    def _set_paused(self, name: str, paused: bool) -> bool:
        known = {s.name: s for s in self.schedules()}
        info = known.get(name)
        if info is None:
            short = [s for s in known.values() if s.name.rsplit(".", 1)[-1] == name]
            if len(short) != 1:
                raise InvalidOption(
                    f"no periodic job named {name!r}; "
                    f"the schedules are {', '.join(known) or 'none'}"
                )
            info = short[0]
        if info.stale is False and info.last_slot is None:  # no worker has run it yet
            schedule = self.definition(info.name).options.schedule
            assert schedule is not None
            self.engine.store.schedule_seen(
                info.name, schedule.expression, schedule.tz, self.clock.now(), self.clock.now()
            )
        return self.engine.store.pause_schedule(info.name, paused)

    def service(
        self, *, name: str | None = None, queue: str = "services", lease: float = 10.0
    ) -> Callable[[Callable[..., Any]], BoundJob]:
        """Register a long-running service: it calls ``ctx.ready()`` once up
        (running -> serving), keeps its lease by heartbeat, and returns when
        ``ctx.stopping`` turns true after ``app.stop(id)``."""
        return self.job(
            name=name, queue=queue, lease=lease, retry=Retry(max_attempts=1), service=True
        )

    def definition(self, job: JobDefinition | str) -> BoundJob:
        """A registered definition by name (or short name), bound to this App;
        ``UnknownJob`` if none."""
        found = self.registry.find(job)
        if isinstance(found, BoundJob) and found.app is self:
            return found
        return BoundJob(self, found)

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
        actor: str | None = Actor.APP,
    ) -> Job:
        """Create one job: ``ready``, ``scheduled`` when it starts later, or
        ``pending`` until every job in ``after`` has completed. With
        ``connection=`` (a psycopg connection, PostgreSQL only) the job is part
        of the caller's transaction: visible to workers only once it commits."""
        placement = self._placement(delay, run_at, priority, queue, key, after)
        specs = new_jobs(
            self.definition(job), [args or {}], placement, max_payload_bytes=self.max_payload_bytes
        )
        return self.engine.enqueue(specs, actor, connection)[0]

    def enqueue_many(
        self,
        job: JobDefinition | str,
        many_args: Iterable[Mapping[str, Any]],
        *,
        delay: float | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        actor: str | None = Actor.APP,
    ) -> list[Job]:
        """Create many jobs of one kind in one transaction: all of them or none."""
        placement = self._placement(delay, run_at, priority, queue, None, ())
        specs = new_jobs(
            self.definition(job), many_args, placement, max_payload_bytes=self.max_payload_bytes
        )
        return self.engine.enqueue(specs, actor) if specs else []

    def enqueue_batch(
        self,
        requests: Sequence[tuple[JobDefinition | str, Mapping[str, Any] | None, Mapping[str, Any]]],
        actor: str | None = Actor.APP,
    ) -> list[Job]:
        """Jobs of any kinds in one transaction: all of them or none. Each request
        is ``(job, args, options)``, the options those of ``enqueue`` (delay,
        run_at, priority, queue, key, after). ``InvalidOption`` for another
        option; every request is checked before anything is written."""
        specs = []
        for job, args, options in requests:
            unknown = sorted(set(options) - set(_PLACEMENT_OPTIONS))
            if unknown:
                raise InvalidOption(
                    f"unknown option {unknown[0]!r}; "
                    f"the options are {', '.join(_PLACEMENT_OPTIONS)}"
                )
            placement = self._placement(
                options.get("delay"),
                options.get("run_at"),
                options.get("priority"),
                options.get("queue"),
                options.get("key"),
                options.get("after") or (),
            )
            specs += new_jobs(
                self.definition(job),
                [args or {}],
                placement,
                max_payload_bytes=self.max_payload_bytes,
            )
        return self.engine.enqueue(specs, actor) if specs else []

    async def enqueue_async(
        self, job: JobDefinition | str, args: Mapping[str, Any] | None = None, **options: Any
    ) -> Job:
        return await asyncio.to_thread(self.enqueue, job, args, **options)

    def _placement(
        self,
        delay: float | None,
        run_at: datetime | None,
        priority: int | None,
        queue: str | None,
        key: str | None,
        after: Sequence[int | Job],
    ) -> Placement:
        return Placement(
            start=start_time(delay, run_at, self.clock.now()),
            priority=priority,
            queue=queue,
            key=key,
            after=tuple(
                p.id if isinstance(p, Job) else check_id(p, "an id in after") for p in after
            ),
            trace_context=carrier(),
        )

    # -- reading ----------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        return self.reader.get(job_id)

    def jobs(
        self,
        state: State | str | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 100,
        before: int | None = None,
        *,
        parent: int | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        args: str | None = None,
    ) -> list[Job]:
        """Jobs newest first, filtered by any of state, queue, name, parent (a
        job's id: the jobs it spawned), creation time (aware datetimes, both
        bounds exclusive) and a value in their arguments (``args``:
        ``path:value``, such as ``user.email:bob@example.com``; see
        ``ArgsMatch``); at most ``limit`` (1 to 10,000). ``before``: only jobs
        with a smaller id, so passing the last id of one page gives the next.
        ``InvalidOption`` for a bad state, limit, id, time or search."""
        return self.reader.jobs(
            JobFilter(
                _state(state),
                queue,
                name,
                check_limit(limit),
                None if before is None else check_id(before, "before"),
                None if parent is None else check_id(parent, "parent"),
                None if created_after is None else check_instant(created_after, "created_after"),
                None if created_before is None else check_instant(created_before, "created_before"),
                None if args is None else ArgsMatch.parse(args),
            )
        )

    def prune(
        self,
        older_than: Period | None = None,
        states: Sequence[State | str] | None = None,
        *,
        dry_run: bool = False,
    ) -> PruneReport:
        """Delete finished jobs now, the whole table scanned once: those older
        than ``older_than`` (seconds or a timedelta) in ``states`` (default:
        every finished state), or, without ``older_than``, those the App's
        retention says are due. A job another waits on, a parent with children
        left, and a job whose events the state-flow rollup has not counted yet
        (a worker's maintenance counts them) are kept. ``dry_run``: count, change
        nothing. ``InvalidOption`` for a state that is not a finished one or a
        bad period."""
        retention = self.retention
        if older_than is not None or states is not None:
            chosen: set[State] = set(JOBS.final)
            if states is not None:
                chosen = {found for s in states if (found := _state(s)) is not None}
            bad = sorted(s.value for s in chosen - JOBS.final)
            if bad:
                finals = ", ".join(sorted(s.value for s in JOBS.final))
                raise InvalidOption(f"{bad[0]!r} is not a finished state ({finals})")

            def period(state: State) -> Period:
                if state not in chosen:
                    return MAX_RETENTION
                if older_than is not None:
                    return older_than
                kept = self.retention.keep_for("", "", state)
                return MAX_RETENTION if kept is None else kept

            retention = Retention(
                completed=period(State.COMPLETED),
                failed=period(State.FAILED),
                cancelled=period(State.CANCELLED),
            )
        return prune_all(self.engine, retention, dry_run=dry_run)

    def history(self, job_id: int) -> list[Event]:
        """The job's timeline, oldest first."""
        return self.reader.history(job_id)

    def counts(self) -> dict[State, int]:
        return self.reader.counts()

    def queues(self) -> list[QueueStats]:
        """Every queue with its counts by state, and whether it is paused."""
        return self.reader.queues()

    def limits(self) -> list[FlowLimitInfo]:
        """Every limit workers declared (``instar.registry.flow``): on a queue or a job,
        with how many of its jobs run and how many wait."""
        return self.reader.flow_limits()

    def awakeables(self, job_id: int) -> list[Awakeable]:
        return self.reader.awakeables(job_id)

    def children(self, job_id: int) -> list[Job]:
        return self.reader.children(job_id)

    def dependencies(self, job_id: int) -> list[Job]:
        return self.reader.dependencies(job_id)

    def live_workers(self, seen_within: float = 30.0) -> list[WorkerInfo]:
        """Workers heard of in the last ``seen_within`` seconds, with the handlers
        each has: a job whose name none of them has waits for one that has."""
        return self.reader.live_workers(seen_within)

    def last_event_id(self) -> int:
        """The id of the latest event: ``events(after=app.last_event_id(), follow=True)``
        follows what happens from now on."""
        return self.reader.last_event_id()

    def events(
        self,
        after: int | None = None,
        follow: bool = False,
        job: int | None = None,
        queue: str | None = None,
        state: State | str | None = None,
        name: str | None = None,
        timeout: float | None = None,
    ) -> Iterator[Event]:
        """Every event of every job after the event ``after`` (None: from the
        first), in commit order, filtered by any of job, queue, state (the state
        an event moved into) and name. With ``follow`` it waits for new events
        (for ``timeout`` seconds at most, if given). Resuming from the last id
        seen never misses nor repeats an event."""
        where = EventFilter(job, queue, name, _state(state))
        deadline = None if timeout is None else time.monotonic() + timeout
        return EventFeed(self.engine).iterate(after, follow=follow, where=where, deadline=deadline)

    def events_async(
        self,
        after: int | None = None,
        follow: bool = False,
        job: int | None = None,
        queue: str | None = None,
        state: State | str | None = None,
        name: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Event]:
        """``events`` as an async iterator."""
        where = EventFilter(job, queue, name, _state(state))
        deadline = None if timeout is None else time.monotonic() + timeout
        return EventFeed(self.engine).aiterate(after, follow=follow, where=where, deadline=deadline)

    def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """Block until the job is terminal or paused; TimeoutError after ``timeout``.
        Waits on the event feed: woken by the job's own events, no polling of the job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        after = self.last_event_id()
        job = self.get(job_id)
        if _settled(job):
            return job
        feed = EventFeed(self.engine).iterate(
            after, follow=True, where=EventFilter(job_id=job_id), deadline=deadline
        )
        for event in feed:
            if event.from_state != event.to_state and _settled_state(event.to_state):
                job = self.get(job_id)
                if _settled(job):
                    return job
        job = self.get(job_id)
        if _settled(job):
            return job
        raise TimeoutError(f"job {job_id} is still {job.state} after {timeout}s")

    # -- operator verbs -------------------------------------------------------------
    # ``if_version``: apply the verb only to the job as it stood at that version
    # (``job.version``); ``VersionMismatch`` once another change has come first.
    # ``reason``: kept in the detail of the event the verb writes.

    def cancel(
        self,
        job_id: int,
        actor: str | None = Actor.APP,
        *,
        if_version: int | None = None,
        reason: str | None = None,
    ) -> Job:
        """Cancel a job that is not running at once; ask a running one's worker to stop it."""
        return self.operator.cancel(job_id, actor, if_version, reason)

    def retry(
        self,
        job_id: int,
        actor: str | None = Actor.APP,
        *,
        if_version: int | None = None,
        reason: str | None = None,
    ) -> Job:
        """Run a failed job again, with a fresh count of attempts."""
        return self.operator.retry(job_id, actor, if_version, reason)

    def pause(
        self,
        job_id: int,
        actor: str | None = Actor.APP,
        *,
        if_version: int | None = None,
        reason: str | None = None,
    ) -> Job:
        """Pause a waiting job at once, a running one at its next checkpoint, step
        or progress call (where the handler can stop cleanly)."""
        return self.operator.pause(job_id, actor, if_version, reason)

    def resume(
        self,
        job_id: int,
        actor: str | None = Actor.APP,
        *,
        if_version: int | None = None,
        reason: str | None = None,
    ) -> Job:
        return self.operator.resume(job_id, actor, if_version, reason)

    def stop(
        self,
        job_id: int,
        actor: str | None = Actor.APP,
        *,
        if_version: int | None = None,
        reason: str | None = None,
    ) -> Job:
        """Ask a serving service job to stop: serving -> stopping -> completed."""
        return self.operator.stop(job_id, actor, if_version, reason)

    def resolve(
        self, awakeable_id: str, value: Any = None, actor: str | None = Actor.APP
    ) -> Awakeable:
        """Answer a job waiting in ``ctx.await_signal``: it gets ``value``."""
        value_json = encode(value, what="the signal value", max_bytes=self.max_payload_bytes)
        return self.operator.resolve(awakeable_id, value_json, actor)

    def reject(self, awakeable_id: str, reason: str, actor: str | None = Actor.APP) -> Awakeable:
        """Refuse a signal: ``ctx.await_signal`` raises SignalRejected(reason)."""
        return self.operator.reject(awakeable_id, reason, actor)

    def pause_queue(self, queue: str) -> bool:
        """Claim nothing more from ``queue`` until it is resumed; running jobs go on."""
        return self.engine.pause_queue(queue)

    def resume_queue(self, queue: str) -> bool:
        return self.engine.resume_queue(queue)

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
                **{"retention": self.retention, **settings},
            ),
            machines=lambda: self._machine_runtime,
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


def _module_name(module: str) -> str:
    """A handler's module as an importer sees it: a script run as ``python shop.py``
    defines its handlers in ``__main__``, but a worker started with ``--app
    shop:app`` imports them from ``shop``; both must name the job ``shop.ship``."""
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name)  # python -m package.module
    path = getattr(main, "__file__", None)
    return Path(path).stem if path else module


def _settled_state(state: State) -> bool:
    return is_terminal(state) or state is State.PAUSED


def _settled(job: Job) -> bool:
    return _settled_state(job.state)


def _split_options(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Enqueue options share the keyword space with the handler's arguments."""
    args = {k: v for k, v in kwargs.items() if k not in ENQUEUE_OPTIONS}
    options = {k: v for k, v in kwargs.items() if k in ENQUEUE_OPTIONS}
    return args, options


def _state(state: State | str | None) -> State | None:
    if state is None or isinstance(state, State):
        return state
    try:
        return State(state)
    except ValueError:
        raise InvalidOption(
            f"unknown state {state!r}; states are {', '.join(s.value for s in State)}"
        ) from None
