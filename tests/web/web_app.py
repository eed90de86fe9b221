"""Handlers the HTTP API tests enqueue by name (``instar serve --app tests.web.web_app:app``);
tests that run a worker register the same handlers on their own App (``handlers``)."""

from __future__ import annotations

import time

import instar


def hello(name: str = "world") -> str:
    return f"hello {name}"


def mail(to: str) -> None:
    """Sent on the ``emails`` queue (for tokens limited to one queue)."""


def signup(user: dict[str, str], password: str) -> str:
    """Takes a secret among its arguments (the dashboard masks it)."""
    return f"welcome {user.get('email', '?')}"


def slow(ctx: instar.Context) -> str:
    """Runs until cancelled, checking in at checkpoints."""
    for _ in range(600):
        ctx.checkpoint(None)
        time.sleep(0.05)
    return "never cancelled"


def approval(ctx: instar.Context) -> str:
    answer = ctx.await_signal("approve", timeout=3600)
    return f"approved by {answer['by']}"


def handlers(app: instar.App) -> instar.App:
    """``app`` with every handler above registered."""
    app.job(name="hello")(hello)
    app.job(name="mail", queue="emails")(mail)
    app.job(name="slow")(slow)
    app.job(name="signup")(signup)
    app.job(name="approval")(approval)
    return app


app = handlers(instar.App())
