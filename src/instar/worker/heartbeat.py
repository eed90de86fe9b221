"""The heartbeat: keeps the leases of a worker's jobs alive from a thread of its own.

Leases must not depend on anything a handler can block: an ``async def``
handler that blocks the event loop, or a burst of database work on the
worker's own database thread. So the heartbeat runs in its own thread: every
third of the shortest lease held (at most every second), one statement reads
every job the worker holds, renews the leases that are due (``RENEWAL``)
and says the worker was seen; what comes back (a cancel or pause asked for, a
service told to stop) is handed to the event loop. A handler that holds the
GIL without ever releasing it (a C extension in one long call) can still
starve this thread: the README says so.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence

from instar.engine import Engine
from instar.store.contract import Held, Renewal, WorkerInfo

log = logging.getLogger("instar.worker")

IDLE_INTERVAL = 5.0
"""Seconds between heartbeats of a worker that holds no job (it still says it is alive)."""

LONGEST_INTERVAL = 1.0
"""Seconds between two heartbeats at most while jobs are held, so that a cancel
or pause request reaches the handler within a second."""

RENEWAL = Renewal(share=0.75, margin=3 * LONGEST_INTERVAL)
"""A beat renews a lease once less than three quarters of it, or less than 3 s,
is left; other leases are left as they are, so that a 30 s lease is written
every 7.5 s, not at every beat (on PostgreSQL each write is a new row version,
index entries included: a worker holding 200 jobs for 20 s wrote 3,800 of
them, now 400). After any beat, a lease has at least three quarters of its
length and at least three beat intervals left (a lease under 3 s is renewed at
every beat, each a third of it apart): a worker whose beats stop keeps its
jobs for three quarters of their lease at least, and two beats in a row may
fail before a lease runs out, as when every beat renewed every lease."""


class Heartbeat:
    """A daemon thread beating for one worker until ``stop``."""

    def __init__(
        self,
        engine: Engine,
        worker: WorkerInfo,
        held: Callable[[], Sequence[tuple[int, float]]],
        news: Callable[[list[Held]], None],
    ) -> None:
        """``held()`` gives (job id, lease seconds) of every job the worker holds,
        from any thread; ``news`` gets what each beat that went through learned
        (from this thread; an empty list when nothing changed)."""
        self.engine = engine
        self.worker = worker
        self._held = held
        self._news = news
        self._stopped = threading.Event()
        self._changed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="instar-heartbeat", daemon=True)

    def start(self) -> None:
        self.engine.register_worker(self.worker)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._changed.set()
        self._thread.join(timeout=5)

    def beat(self) -> float:
        """One heartbeat now; returns the seconds to wait before trying again after a
        failure (0.2), or ``IDLE_INTERVAL`` after a beat that went through."""
        held = self._held()
        try:
            news = self.engine.heartbeat(self.worker.id, [job_id for job_id, _ in held], RENEWAL)
        except Exception as exc:
            log.warning("heartbeat failed (%s); trying again", exc)
            return 0.2
        self._news(news)
        return IDLE_INTERVAL

    def nudge(self) -> None:
        """The jobs held changed (a claim): the next beat may be due sooner."""
        self._changed.set()

    def _run(self) -> None:
        last = -math.inf
        retry_at = 0.0
        while not self._stopped.is_set():
            now = time.monotonic()
            due = max(last + interval([lease for _, lease in self._held()]), retry_at)
            if now >= due:
                pause = self.beat()
                last = time.monotonic()
                retry_at = last + pause if pause < IDLE_INTERVAL else 0.0
                continue
            self._changed.wait(due - now)
            self._changed.clear()


def interval(leases: Sequence[float]) -> float:
    """A third of the shortest lease held, and at most ``LONGEST_INTERVAL``;
    every ``IDLE_INTERVAL`` seconds when nothing is held."""
    if not leases:
        return IDLE_INTERVAL
    return min(LONGEST_INTERVAL, min(leases) / 3)
