"""Handlers under flow control, for tests that run workers as separate processes."""

from __future__ import annotations

import time

import instar

app = instar.App()
app.queue("single", concurrency=1)


@app.job(name="per_user", concurrency=instar.Limit(key="user:{user}", max=1))
def per_user(user: int, seconds: float = 0.05) -> int:
    time.sleep(seconds)
    return user


@app.job(name="one_at_a_time", queue="single")
def one_at_a_time(seconds: float = 0.05) -> None:
    time.sleep(seconds)


@app.job(name="paced", rate=instar.Rate(10, per=1))
def paced() -> None:
    pass


@app.job(name="flaky", retry=instar.Retry(max_attempts=2, initial_interval=0.01, jitter=0))
def flaky(ctx: instar.Context) -> str:
    if ctx.attempt == 1:
        raise RuntimeError("first attempts fail")
    return "second time lucky"
