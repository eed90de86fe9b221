"""Runs one handler call and says how it ended, as an outcome.

``async def`` handlers run as tasks on the worker's event loop, under their
timeout (seconds from the handler's start; past it the handler is cancelled).
``def`` handlers run in a thread of the worker's pool, called directly there
(no asyncio hop per job): the worker arms their timeout when they start, and
a ``def`` handler cannot be stopped from outside its thread, so one that runs
past its timeout keeps its thread until it returns.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from instar.context import Context
from instar.control import CancelNow, LeaseLost, PauseNow, Suspend
from instar.engine import Cancelled, Outcome, Paused, Raised, Returned, Suspended
from instar.errors import Fatal
from instar.registry import JobDefinition

log = logging.getLogger("instar.worker")

T = TypeVar("T")


def outcome_of(error: BaseException) -> Outcome | None:
    """How a run that raised ``error`` ends; None when the worker lost the job's
    lease (its report would be refused: the run is dropped)."""
    match error:
        case Suspend():
            return Suspended(error.wake_at, error.detail, error.awaiting, error.joining)
        case PauseNow():
            return Paused()
        case CancelNow():
            return Cancelled()
        case LeaseLost():
            return None
        case Exception():  # a failure of user code is an outcome, not a crash
            return Raised(error)
        case _:  # sys.exit() in a handler ends its job, not the worker
            return Raised(fatal(error))


def call_sync(definition: JobDefinition, ctx: Context, args: dict[str, Any]) -> Outcome | None:
    """Call a ``def`` handler in this (pool) thread; never raises."""
    call_args = (ctx,) if definition.takes_context else ()
    try:
        return Returned(definition.fn(*call_args, **args))
    except BaseException as error:
        return outcome_of(error)


async def call_async(
    definition: JobDefinition, ctx: Context, args: dict[str, Any]
) -> Outcome | None:
    """Await an ``async def`` handler under its timeout. Raises ``CancelledError``
    when the worker cancels the run; otherwise never raises."""
    call_args = (ctx,) if definition.takes_context else ()
    timeout = definition.options.timeout
    limit = None if timeout is None else asyncio.timeout(timeout)
    try:
        if limit is None:  # no timeout context to enter and leave (~2 µs a job)
            return Returned(await definition.fn(*call_args, **args))
        async with limit:
            return Returned(await definition.fn(*call_args, **args))
    except asyncio.CancelledError:
        raise
    except TimeoutError as error:
        expired = limit is not None and limit.expired()
        return Raised(past_timeout(ctx, definition)) if expired else outcome_of(error)
    except BaseException as error:
        return outcome_of(error)


def past_timeout(ctx: Context, definition: JobDefinition) -> TimeoutError:
    timeout = definition.options.timeout
    return TimeoutError(f"job {ctx.job_id} ({definition.name}) ran past its timeout of {timeout}s")


def fatal(error: BaseException) -> Exception:
    """Wrap an error that no retry can fix (``sys.exit`` in a handler, an error
    the worker met ending a run)."""
    try:
        message = str(error)
    except Exception:
        message = f"<an unreadable {type(error).__qualname__}>"
    wrapped = Fatal(
        f"{type(error).__qualname__}: {message}" if message else type(error).__qualname__
    )
    wrapped.__cause__ = error
    return wrapped


class HandlerThreads(Generic[T]):
    """The threads that run ``def`` handlers: ``target(item)`` for each item
    given, in the first thread free, each thread taking the next item from one
    queue. Threads start as they are needed, up to ``size``; they are daemons,
    so a handler that never returns does not hold the process at its exit.

    Cheaper than a ``ThreadPoolExecutor`` for calls this short (no future per
    call, no lock taken to hand one over): 20,000 no-op calls handed from an
    event loop and their ends handed back, ~12 µs of CPU a call against ~29
    (throwaway script, Python 3.11, 2 cores)."""

    def __init__(self, size: int, target: Callable[[T], None], name: str) -> None:
        self._size = size
        self._target = target
        self._name = name
        self._items: queue.SimpleQueue[T | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, item: T, in_flight: int) -> None:
        """Run ``target(item)`` in a thread. ``in_flight``: items given whose call
        has not returned, this one included (a thread starts while there are
        fewer threads than that)."""
        if len(self._threads) < min(in_flight, self._size):
            thread = threading.Thread(
                target=self._serve, name=f"{self._name}_{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        self._items.put(item)

    def shutdown(self) -> None:
        """Items not taken yet are dropped (their calls never start); each thread
        ends once its call returns, and none is waited for."""
        try:
            while True:
                self._items.get_nowait()
        except queue.Empty:
            pass
        for _ in self._threads:
            self._items.put(None)

    def _serve(self) -> None:
        while (item := self._items.get()) is not None:
            try:
                self._target(item)
            except Exception:  # the target reports its own outcome: this is a bug
                log.exception("a handler thread's call failed")
