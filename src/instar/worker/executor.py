"""Runs one handler call: async handlers as tasks, sync ones in a thread pool."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from instar.context import Context
from instar.registry import JobDefinition


async def run_handler(
    definition: JobDefinition, ctx: Context, args: dict[str, Any], threads: ThreadPoolExecutor
) -> Any:
    """Call the handler with the job's arguments, under its timeout.

    A sync handler that times out cannot be killed: its thread runs on, but
    its result is ignored and the attempt counts as failed.
    """
    call_args = (ctx,) if definition.takes_context else ()
    if definition.is_async:
        work: Any = definition.fn(*call_args, **args)
    else:
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(threads, functools.partial(definition.fn, *call_args, **args))
    timeout = definition.options.timeout
    if timeout is None:
        return await work
    try:
        return await asyncio.wait_for(work, timeout)
    except TimeoutError:
        raise TimeoutError(
            f"job {ctx.job_id} ({definition.name}) ran past its timeout of {timeout}s"
        ) from None
