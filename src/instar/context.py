"""What a running handler can see and do through ``ctx``.

Durable operations (steps, checkpoints, sleeps, signals, children) survive the
worker: a handler that is re-run (after a retry, a resume, a wake-up or an
orphaning) gets every stored step result back without running the step, and
the call that suspended it returns what it waited for. Handlers are therefore
written deterministically around their steps.

Progress and phases are queued to the worker and written with its next batch;
steps and checkpoints are written at once, because the handler relies on them.
Every write goes through the engine, like every other write in Instar.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from instar.control import CancelNow, LeaseLost, PauseNow, Suspend
from instar.engine import Engine, plan_move
from instar.errors import ChildFailed, InvalidOption, SignalRejected, SignalTimeout
from instar.lifecycle import State, can_transition, is_terminal
from instar.models import Awakeable, Job
from instar.payload import (
    DEFAULT_MAX_BYTES,
    MAX_PROGRESS_MESSAGE,
    cut,
    decode,
    encode,
    safe_text,
)
from instar.registry import JobDefinition, Placement, new_jobs
from instar.store.contract import Held, Lease, Move, Note
from instar.tracing import carrier
from instar.vocabulary import AwakeableState, Trigger, job_actor

PROGRESS_EVENT_INTERVAL = 5.0
"""Seconds between two progress events of one run in the timeline (the job itself
always shows the latest progress)."""

MAX_NAME = 512
"""Characters of a step's, signal's or phase's name kept."""


class Context:
    """The handle a handler gets for its job."""

    def __init__(
        self,
        job: Job,
        worker: str,
        report: Callable[[Note | Move], None],
        engine: Engine | None = None,
        on_state: Callable[[Job], None] | None = None,
        max_payload_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.job = job
        self.worker = worker
        self._report = report
        self._engine = engine
        self._on_state = on_state
        self._max_payload_bytes = max_payload_bytes
        # Plain flags: set by the worker's loop, read by the handler in any thread.
        self._cancelled = False
        self._pause_requested = job.pause_requested
        self._steps: dict[str, str | None] | None = None
        self._sleeps = 0
        self._spawns = 0
        self._signals_awaited: set[str] = set()
        self._progress_noted_at = -math.inf

    # -- what the handler may read ------------------------------------------------

    @property
    def job_id(self) -> int:
        return self.job.id

    @property
    def attempt(self) -> int:
        return self.job.attempt

    @property
    def cancelled(self) -> bool:
        """True once someone asked to cancel this job; a long loop should stop then."""
        return self._cancelled

    @property
    def pause_requested(self) -> bool:
        """True once someone asked to pause this job; it pauses at its next
        checkpoint, step or progress call."""
        return self._pause_requested

    @property
    def stopping(self) -> bool:
        """For a service job: someone asked it to stop; return to finish."""
        return self.job.state is State.STOPPING

    @property
    def checkpoint_data(self) -> Any:
        """The last checkpoint saved by any run of this job (None on a first run)."""
        return self.job.checkpoint

    # -- progress --------------------------------------------------------------

    def progress(
        self, current: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Record how far the job is (``current`` of ``total``, finite numbers, and a
        message cut to ``MAX_PROGRESS_MESSAGE`` characters). The job always shows
        the latest; its timeline keeps one progress event every
        ``PROGRESS_EVENT_INTERVAL`` seconds at most, and the last one
        (``current >= total``). A pending pause or cancel request takes effect here."""
        if message is not None:
            message = cut(str(message), MAX_PROGRESS_MESSAGE)
        detail = {"current": current, "total": total, "message": message}
        text = encode(detail, what="progress")
        now = time.monotonic()
        finished = total is not None and current >= total
        noted = finished or now - self._progress_noted_at >= PROGRESS_EVENT_INTERVAL
        if noted:
            self._progress_noted_at = now
        note = Note(
            self.job.id,
            Trigger.PROGRESS,
            self.worker,
            None,
            text,
            progress_json=text,
            in_timeline=noted,
        )
        self._report(note)
        self._yield_if_asked()

    def phase(self, name: str) -> None:
        """Name the stage the handler is in (preparing, collecting ...): a timeline entry."""
        detail = json.dumps({"phase": safe_text(name, MAX_NAME)})
        self._report(Note(self.job.id, Trigger.PHASE, self.worker, None, detail))

    # -- durable operations ---------------------------------------------------------

    def step(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` once for this job; its JSON result is stored and returned
        again, without calling ``fn``, on every later run of the same job.

        In an async handler ``fn`` may be a coroutine function: ``await
        ctx.step(name, fn)`` (the same as ``step_async``)."""
        if inspect.iscoroutinefunction(fn):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                raise InvalidOption(
                    f"step {name!r} runs a coroutine function in a `def` handler; "
                    "make the handler `async def` and `await ctx.step(...)`"
                ) from None
            return self.step_async(name, fn, *args, **kwargs)
        name = safe_text(name, MAX_NAME)
        stored = self._stored_steps()
        if name in stored:
            return decode(stored[name])
        self._yield_if_asked()
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            if asyncio.iscoroutine(result):
                result.close()
            raise InvalidOption(
                f"step {name!r} returned an awaitable; give ctx.step the async function "
                "itself and await it: `await ctx.step(name, fn)`"
            )
        self._save_step(name, encode(result, what=f"the result of step {name!r}"))
        return result

    async def step_async(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``step`` for async handlers: ``fn`` may be a coroutine function."""
        name = safe_text(name, MAX_NAME)
        stored = await asyncio.to_thread(self._stored_steps)
        if name in stored:
            return decode(stored[name])
        self._yield_if_asked()
        result = fn(*args, **kwargs)
        if asyncio.iscoroutine(result):
            result = await result
        result_json = encode(result, what=f"the result of step {name!r}")
        await asyncio.to_thread(self._save_step, name, result_json)
        return result

    def checkpoint(self, data: Any) -> None:
        """Save resumable data (``ctx.checkpoint_data`` on a later run). A pending
        pause or cancel request takes effect here."""
        data_json = encode(data, what="checkpoint data")
        self._check(self._engine_().save_checkpoint(self._lease(), data_json))
        self.job = replace(self.job, checkpoint=decode(data_json))
        self._yield_if_asked()

    def sleep(self, seconds: float) -> None:
        """A durable sleep: the job is suspended, frees its worker, and runs again
        (from the top, steps replayed) once the time is up. ``seconds``: a finite
        number, at least 0 (``InvalidOption`` otherwise)."""
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise InvalidOption(f"ctx.sleep takes a finite number of seconds >= 0, got {seconds!r}")
        self._sleeps += 1
        name = f"sleep#{self._sleeps}"
        stored = self._stored_steps()
        if name in stored:
            wake_at = float(decode(stored[name]))
        else:
            wake_at = self._now() + seconds
            self._save_step(name, json.dumps(wake_at))
        if self._now() < wake_at:
            raise Suspend(wake_at, {"sleep": name, "until": wake_at})

    async def sleep_async(self, seconds: float) -> None:
        await asyncio.to_thread(self._stored_steps)
        self.sleep(seconds)

    def awakeable(self, name: str) -> str:
        """The id of this job's awakeable ``name``: hand it to whoever will answer."""
        return self._awakeable(name).id

    def await_signal(self, name: str, timeout: float | None = None) -> Any:
        """Wait for awakeable ``name`` to be resolved (returns its value) or rejected
        (raises SignalRejected); SignalTimeout after ``timeout`` seconds. The job
        is suspended meanwhile and holds no worker."""
        name = safe_text(name, MAX_NAME)
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout < 0
        ):
            raise InvalidOption(
                f"a signal's timeout is a finite number of seconds >= 0, got {timeout!r}"
            )
        if name in self._signals_awaited:
            raise InvalidOption(
                f"job {self.job.id} awaits signal {name!r} twice in one run; "
                "give each signal its own name"
            )
        self._signals_awaited.add(name)
        awakeable = self._awakeable(name)
        if awakeable.state is AwakeableState.RESOLVED:
            return awakeable.value
        if awakeable.state is AwakeableState.REJECTED:
            raise SignalRejected(name, awakeable.reason)
        if awakeable.state is AwakeableState.TIMED_OUT:
            raise SignalTimeout(name)
        timeout_at = awakeable.timeout_at.timestamp() if awakeable.timeout_at else None
        if timeout is not None and timeout_at is None:
            timeout_at = self._now() + timeout
            self._engine_().set_signal_timeout(awakeable.id, timeout_at)
        detail = {"awaiting": awakeable.id, "signal": name}
        raise Suspend(timeout_at, detail, awaiting=awakeable.id)

    def spawn(self, definition: JobDefinition, **kwargs: Any) -> Job:
        """Create a child job, once however often this handler re-runs."""
        self._spawns += 1
        key = f"instar:child:{self.job.id}:{self._spawns}"
        placement = Placement(key=key, parent_id=self.job.id, trace_context=carrier())
        [spec] = new_jobs(
            definition, [kwargs], placement, max_payload_bytes=self._max_payload_bytes
        )
        return self._engine_().enqueue([spec], actor=job_actor(self.job.id))[0]

    def join(self, children: Sequence[Job]) -> list[Any]:
        """Wait until every child has ended; their results in order, or ChildFailed.
        The job is suspended meanwhile and holds no worker."""
        read = self._engine_().read
        current = [read.get(child.id) for child in children]
        if all(is_terminal(c.state) for c in current):
            for child in current:
                if child.state is not State.COMPLETED:
                    raise ChildFailed(child.id, child.state.value, child.error)
            return [child.result for child in current]
        ids = [c.id for c in current]
        raise Suspend(None, {"join": ids}, joining=tuple(ids))

    def ready(self) -> None:
        """For a service job: it is up. running -> serving; it keeps its lease by heartbeat."""
        move = plan_move(self.job, State.SERVING, Trigger.SERVING, by_lease=True)
        self.job = replace(self.job, state=State.SERVING, version=self.job.version + 1)
        self._report(move)
        if self._on_state is not None:
            self._on_state(self.job)

    # -- the worker's side -----------------------------------------------------------

    def request_cancel(self) -> None:
        self._cancelled = True

    def request_pause(self) -> None:
        self._pause_requested = True

    def set_state(self, state: State) -> None:
        """The worker learned (by heartbeat) that an operator moved the job (stop).
        A state the job cannot move to from the one known here is older news
        (a beat that read the job before this run's own move, such as
        ``ready``, was written) and is ignored."""
        if state is not self.job.state and can_transition(self.job.state, state):
            self.job = replace(self.job, state=state, version=self.job.version + 1)

    # -- plumbing ------------------------------------------------------------------

    def _yield_if_asked(self) -> None:
        if self._cancelled:
            raise CancelNow()
        if self._pause_requested and self.job.state is State.RUNNING:
            raise PauseNow()

    def _check(self, held: Held | None) -> None:
        if held is None:
            raise LeaseLost()
        self._cancelled = self._cancelled or held.cancel_requested
        self._pause_requested = self._pause_requested or held.pause_requested

    def _save_step(self, name: str, result_json: str) -> None:
        """Store a step's result durably before the handler goes on; a worker
        that lost the job's lease stops here."""
        self._check(self._engine_().save_step(self._lease(), name, result_json))
        self._stored_steps()[name] = result_json

    def _stored_steps(self) -> dict[str, str | None]:
        if self._steps is None:
            self._steps = self._engine_().read.steps(self.job.id)
        return self._steps

    def _awakeable(self, name: str) -> Awakeable:
        return self._engine_().awakeable(self.job.id, safe_text(name, MAX_NAME))

    def _engine_(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("durable operations need a context given by a worker")
        return self._engine

    def _lease(self) -> Lease:
        if self.job.lease_token is None:
            raise LeaseLost()
        return Lease(self.job.id, self.job.lease_token, self.worker)

    def _now(self) -> float:
        return self._engine_().clock.now()

    def __repr__(self) -> str:
        return f"<Context job={self.job.id} {self.job.name} attempt={self.job.attempt}>"
