"""Group commit of enqueues over HTTP: requests that arrive while a commit is
under way wait for the next one and share it, so that many clients enqueueing
at once cost one transaction, one flush to disk and one hand-off to a thread
between them instead of one each (the technique databases use for their own
log, e.g. PostgreSQL's ``commit_delay``). Nothing waits on a timer: before
each commit the committer lets the event loop turn while requests keep joining
(``GATHER_TURNS`` turns at most, a few microseconds each), so that requests
already received join it; a lone request waits one turn. Measured (wrk, 16
connections, 5 s, three runs each): 1,410-1,739 POST /jobs a second committing at once,
1,828-2,287 gathering.

A commit holds the requests of one actor in one transaction (events name their
actor). When it fails, its requests are retried one by one, so that one bad
request gets its own error and never fails the others.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from instar.app import App
from instar.models import Job

MOST = 500
"""Requests in one commit at most; more wait for the next."""
GATHER_TURNS = 10
"""Turns of the event loop a commit waits at most while requests keep joining."""


@dataclass(frozen=True, slots=True)
class Wanted:
    """One request: the job's registered name, its arguments, the options of
    ``App.enqueue`` and the actor its events name."""

    name: str
    args: dict[str, Any]
    options: dict[str, Any]
    actor: str


class GroupCommit:
    """Enqueues that share commits; one per server (its event loop's)."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._waiting: list[tuple[Wanted, asyncio.Future[Job]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def enqueue(self, wanted: Wanted) -> Job:
        """The job ``wanted`` asks for, once its commit is durable; the error
        ``App.enqueue`` raises for it otherwise."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Job] = loop.create_future()
        self._waiting.append((wanted, future))
        if self._committer is None:
            self._committer = loop.create_task(self._commit_waiting())
        return await future

    async def _commit_waiting(self) -> None:
        group: list[tuple[Wanted, asyncio.Future[Job]]] = []
        try:
            while self._waiting:
                for _ in range(GATHER_TURNS):
                    joined = len(self._waiting)
                    await asyncio.sleep(0)
                    if len(self._waiting) == joined:
                        break
                group, self._waiting = self._waiting[:MOST], self._waiting[MOST:]
                outcomes = await run_in_threadpool(self._commit, [w for w, _ in group])
                for (_, future), outcome in zip(group, outcomes, strict=True):
                    if future.done():  # its client went away; the job stands
                        continue
                    if isinstance(outcome, Job):
                        future.set_result(outcome)
                    else:
                        future.set_exception(outcome)
                group = []
        except BaseException as stopped:  # the server is stopping: nobody is left waiting
            for _, future in group + self._waiting:
                if not future.done():
                    future.set_exception(RuntimeError(f"the server stopped ({stopped!r})"))
            self._waiting = []
            raise
        finally:
            self._committer = None

    def _commit(self, wanted: list[Wanted]) -> list[Job | Exception]:
        """Each request's job or error; runs on a thread."""
        outcomes: list[Job | Exception] = [RuntimeError("not committed")] * len(wanted)
        by_actor: dict[str, list[int]] = {}
        for i, one in enumerate(wanted):
            by_actor.setdefault(one.actor, []).append(i)
        for actor, indexes in by_actor.items():
            try:
                jobs = self._app.enqueue_batch(
                    [(wanted[i].name, wanted[i].args, wanted[i].options) for i in indexes],
                    actor=actor,
                )
            except Exception as failed:
                if len(indexes) == 1:
                    outcomes[indexes[0]] = failed
                    continue
                for i in indexes:  # one by one: each request gets its own answer
                    one = wanted[i]
                    try:
                        outcomes[i] = self._app.enqueue(
                            one.name, one.args, actor=actor, **one.options
                        )
                    except Exception as exc:
                        outcomes[i] = exc
                continue
            for i, job in zip(indexes, jobs, strict=True):
                outcomes[i] = job
        return outcomes
