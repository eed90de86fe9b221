"""Handlers for tests that run workers as separate processes."""

from __future__ import annotations

import asyncio
import os
import time

import instar

app = instar.App()


def _log(line: str) -> None:
    """One small O_APPEND write per line: lines from several processes never interleave."""
    fd = os.open(os.environ["INSTAR_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@app.job(name="record")
def record(n: int) -> int:
    _log(f"{n} {os.getpid()}")
    return n


@app.job(name="sleepy", lease=1.0, queue="fragile")
def sleepy(ctx: instar.Context, seconds: float) -> str:
    _log(f"start {ctx.job_id} attempt {ctx.attempt} pid {os.getpid()}")
    if ctx.attempt == 1:
        time.sleep(seconds)
    return f"done on attempt {ctx.attempt}"


@app.job(name="sleepy_async", lease=1.0, queue="fragile")
async def sleepy_async(ctx: instar.Context, seconds: float) -> str:
    _log(f"start {ctx.job_id} attempt {ctx.attempt} pid {os.getpid()}")
    if ctx.attempt == 1:
        await asyncio.sleep(seconds)
    return f"done on attempt {ctx.attempt}"


@app.job(name="approval")
def approval(ctx: instar.Context) -> str:
    answer = ctx.await_signal("approve", timeout=3600)
    return f"approved by {answer['by']}"


@app.job(name="phased")
def phased(ctx: instar.Context) -> None:
    ctx.phase("preparing")
    ctx.phase("collecting")
    ctx.checkpoint({"page": 3})


@app.job(name="record_leased", lease=1.0, queue="leased")
def record_leased(n: int, seconds: float = 0.0) -> int:
    """``record`` on a one-second lease: a killed worker's jobs are rescued quickly."""
    _log(f"{n} {os.getpid()}")
    time.sleep(seconds)
    return n


@app.job(name="record_slowly", queue="slow")
def record_slowly(n: int, seconds: float = 0.01) -> int:
    """``record`` that takes a while, on the default (long) lease."""
    _log(f"{n} {os.getpid()}")
    time.sleep(seconds)
    return n
