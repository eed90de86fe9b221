"""Handlers the dashboard's browser tests run (``instar serve`` and ``instar
worker`` take ``--app tests.browser.dashboard_app:app``)."""

from __future__ import annotations

import time

import instar


def hello(name: str = "world") -> str:
    return f"hello {name}"


def signup(user: dict[str, str], password: str) -> str:
    """Takes a secret among its arguments (the dashboard masks it)."""
    return f"welcome {user.get('email', '?')}"


def phases(ctx: instar.Context, steps: int = 3, pause: float = 0.8) -> int:
    """Names a phase and reports progress at each step, slowly enough to watch."""
    for step in range(steps):
        ctx.phase(f"stage {step + 1}")
        ctx.progress(step + 1, steps)
        time.sleep(pause)
    return steps


def boom(label: str = "") -> None:
    raise ValueError(f"<script>alert('boom {label}')</script> went wrong")


def approval(ctx: instar.Context) -> str:
    answer = ctx.await_signal("approve", timeout=3600)
    return f"approved by {answer['by']}"


def steady(ctx: instar.Context, seconds: float = 4.0) -> str:
    """Runs for a while under a short lease, so that a lost worker shows soon."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ctx.checkpoint(None)
        time.sleep(0.1)
    return "done"


def handlers(app: instar.App) -> instar.App:
    """``app`` with every handler above registered."""
    app.job(name="hello")(hello)
    app.job(name="signup")(signup)
    app.job(name="phases")(phases)
    app.job(name="boom", retry=instar.Retry(max_attempts=1))(boom)
    app.job(name="approval")(approval)
    app.job(name="steady", lease=2.0)(steady)
    return app


app = handlers(instar.App())
