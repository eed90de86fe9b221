"""Runs one handler call: async handlers as tasks, sync ones in a thread pool.

A handler's timeout counts from the moment the handler starts, not from the
moment its call was queued. An ``async def`` handler that runs past it is
cancelled. A ``def`` handler cannot be stopped from outside its thread: the
attempt fails at the timeout, but the thread runs on until the function
returns; ``on_overrun`` is told, with the thread's future, so that the worker
counts that thread's slot as lost until it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from instar.context import Context
from instar.registry import JobDefinition


async def run_handler(
    definition: JobDefinition,
    ctx: Context,
    args: dict[str, Any],
    threads: ThreadPoolExecutor,
    on_overrun: Callable[[asyncio.Future[Any]], None],
) -> Any:
    """Call the handler with the job's arguments, under its timeout (seconds, from
    the handler's start). Raises what the handler raises, or ``TimeoutError``."""
    call_args = (ctx,) if definition.takes_context else ()
    timeout = definition.options.timeout
    if definition.is_async:
        work = definition.fn(*call_args, **args)
        if timeout is None:
            return await work
        try:
            return await asyncio.wait_for(work, timeout)
        except TimeoutError:
            raise _past(ctx, definition, timeout) from None
    loop = asyncio.get_running_loop()
    started: asyncio.Future[None] = loop.create_future()

    def call() -> Any:
        loop.call_soon_threadsafe(_set, started)
        return definition.fn(*call_args, **args)

    running = loop.run_in_executor(threads, call)
    if timeout is None:
        return await running
    await started
    try:
        return await asyncio.wait_for(asyncio.shield(running), timeout)
    except TimeoutError:
        on_overrun(running)
        raise _past(ctx, definition, timeout) from None


def _set(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _past(ctx: Context, definition: JobDefinition, timeout: float) -> TimeoutError:
    return TimeoutError(f"job {ctx.job_id} ({definition.name}) ran past its timeout of {timeout}s")
