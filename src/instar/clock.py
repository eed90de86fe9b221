"""Where Instar reads the time: the database's, so tests can freeze and advance it.

Leases, start times, retry times and timers are judged by one clock, the
database's (PostgreSQL's ``clock_timestamp()``; with SQLite, the one machine's
clock), never by a worker's own: ``DatabaseClock`` reads this process's clock
and adds the offset to the database's, measured every ``refresh`` seconds.
Tests pass a ``FrozenClock`` instead, which is taken as it is.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

log = logging.getLogger("instar.clock")


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class DatabaseClock:
    """The database's time, read as this process's clock plus a measured offset.

    ``attach(source)`` gives it a function that returns the database's time
    (epoch seconds); until then, and while the database cannot be reached, it
    tells the local time plus the last offset measured. ``now()`` never raises.
    The offset is measured as ``source() - (before + after) / 2`` around one
    round trip, every ``refresh`` seconds (an error of half a round trip at most).
    """

    def __init__(self, local: Clock | None = None, refresh: float = 10.0) -> None:
        self.local: Clock = local or SystemClock()
        self.refresh = refresh
        self.offset = 0.0
        self._source: Callable[[], float] | None = None
        self._next = -math.inf
        self._measuring = threading.Lock()

    def attach(self, source: Callable[[], float]) -> None:
        self._source = source
        self._next = -math.inf

    def now(self) -> float:
        if self._source is not None and time.monotonic() >= self._next:
            self._measure(self._source)
        return self.local.now() + self.offset

    def _measure(self, source: Callable[[], float]) -> None:
        if not self._measuring.acquire(blocking=False):
            return  # another thread measures now: use the last offset meanwhile
        try:
            before = self.local.now()
            database = source()
            after = self.local.now()
        except Exception as exc:
            log.debug("could not read the database's time (%s); keeping the last offset", exc)
            self._next = time.monotonic() + min(self.refresh, 1.0)
            return
        finally:
            self._measuring.release()
        offset = database - (before + after) / 2
        if abs(offset - self.offset) > 1.0:
            log.warning(
                "this process's clock is %+.1fs off the database's; using the database's",
                -offset,
            )
        self.offset = offset
        self._next = time.monotonic() + self.refresh


class FrozenClock:
    """A clock that moves only when told to: for deterministic timer tests."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


def to_datetime(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)
