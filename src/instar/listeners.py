"""Transition listeners: code of the application called after a move of this
process's has committed (``@app.on_transition``), for what surrounds the
engine (notifications, metrics, cleanup).

The engine hands every committed transaction's moved jobs to ``Listeners``,
which queues them (nothing more happens on the committing thread) and, on a
thread of its own, reads the moves that transaction wrote, and the jobs as they
are by then, and calls each listener whose filters match. A listener never
changes an outcome: the move has committed before it is called, and an error it
raises is logged and forgotten (the job is not failed, not retried, and the
other listeners are still called). Only this process's moves reach its
listeners (a worker's runs, its maintenance, this App's verbs and enqueues),
each once; another process's reach that process's listeners.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from instar.engine import Engine
from instar.errors import JobNotFound
from instar.lifecycle import State
from instar.models import Event, Job

log = logging.getLogger("instar.listeners")

Listener = Callable[[Job, Event], Any]
REMEMBERED = 100_000
"""Event ids already handed to the listeners that are remembered, so that none
is handed twice: a transaction's moves are read by job and instant, and with a
clock that does not move between two transactions (a frozen test clock, a
coarse one) the second finds the first's too."""
BACKLOG = 10_000
"""Transactions waiting for the listeners at most. Past it (listeners slower
than the moves for a long while), a transaction's moves are not heard, and a
warning says how many were not: the committing thread never waits, and memory
stays bounded."""
READ_TRIES = 4
"""Reads of a transaction's moves before they are given up (the database away:
0.5, 1 and 2 s apart), logged."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """A listener and what it listens to: moves into ``to`` (None: every move,
    a job's entry included), of jobs named ``name`` (full or short name) and on
    ``queue`` (None: any)."""

    listener: Listener
    to: State | None = None
    name: str | None = None
    queue: str | None = None

    def wants(self, job: Job, event: Event) -> bool:
        return (
            (self.to is None or event.to_state is self.to)
            and (self.queue is None or job.queue == self.queue)
            and (
                self.name is None
                or job.name == self.name
                or job.name.rsplit(".", 1)[-1] == self.name
            )
        )


class Listeners:
    """The listeners of one App, called on a thread of their own."""

    def __init__(self, engine: Engine, subscriptions: Sequence[Subscription] = ()) -> None:
        self.engine = engine
        self._subscriptions: list[Subscription] = []
        self._committed: queue.SimpleQueue[tuple[frozenset[int], float] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._unobserve: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self._dropped = 0
        self._idle = threading.Condition(self._lock)
        self._handed: set[int] = set()
        self._handed_order: deque[int] = deque()
        for subscription in subscriptions:
            self.add(subscription)

    def add(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions = [*self._subscriptions, subscription]
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="instar-listeners", daemon=True
                )
                self._thread.start()
                self._unobserve = self.engine.observe(self._heard)

    def _heard(self, moved: frozenset[int], at: float) -> None:
        """On the committing thread: queue, nothing more."""
        with self._lock:
            if self._pending >= BACKLOG:
                self._dropped += 1
                if self._dropped in (1, 10, 100) or self._dropped % 1000 == 0:
                    log.warning(
                        "transition listeners are %d transactions behind: %d not heard so far",
                        self._pending,
                        self._dropped,
                    )
                return
            self._pending += 1
        self._committed.put((moved, at))

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every committed move heard so far has been handed to the
        listeners; False if ``timeout`` seconds passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Call the listeners for what has committed so far (``timeout`` seconds
        at most), then stop."""
        if self._unobserve is not None:
            self._unobserve()
        if self._thread is not None:
            self._committed.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while (item := self._committed.get()) is not None:
            try:
                self._dispatch(*item)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _moves(self, moved: frozenset[int], at: float) -> list[Event]:
        """A transaction's moves not handed to the listeners yet."""
        for attempt in range(READ_TRIES):
            try:
                found = self.engine.read.moves_at(sorted(moved), at)
                return [event for event in found if event.id not in self._handed]
            except Exception:
                if attempt == READ_TRIES - 1:
                    raise
                time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def _handing(self, event_id: int) -> None:
        self._handed.add(event_id)
        self._handed_order.append(event_id)
        if len(self._handed_order) > REMEMBERED:
            self._handed.discard(self._handed_order.popleft())

    def _dispatch(self, moved: frozenset[int], at: float) -> None:
        try:
            events = self._moves(moved, at)
        except Exception:  # the database stayed away: these moves go unheard
            log.exception("transition listeners could not read %d moved jobs", len(moved))
            return
        jobs: dict[int, Job | None] = {}
        for event in events:
            self._handing(event.id)
            if not any(s.to in (None, event.to_state) for s in self._subscriptions):
                continue  # nobody listens to this state: no read of the job
            if event.job_id not in jobs:
                try:
                    jobs[event.job_id] = self.engine.read.get(event.job_id)
                except JobNotFound:  # pruned meanwhile
                    jobs[event.job_id] = None
                except Exception:
                    log.exception("transition listeners could not read job %d", event.job_id)
                    jobs[event.job_id] = None
            job = jobs[event.job_id]
            if job is None:
                continue
            for subscription in self._subscriptions:
                if not subscription.wants(job, event):
                    continue
                try:
                    subscription.listener(job, event)
                except Exception:
                    log.exception(
                        "listener %s failed on job %d (%s -> %s); the job is not affected",
                        getattr(subscription.listener, "__qualname__", subscription.listener),
                        job.id,
                        event.from_state.value if event.from_state else "(new)",
                        event.to_state.value,
                    )
