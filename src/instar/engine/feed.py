"""The event feed: every event appended to any job's timeline, in commit order.

A reader keeps only the id of the last event it got. It reads the next page
with ``Store.events_since``, which never returns an event before every event
that could still commit ahead of it has (see that method), so reading again
from the last id never misses nor repeats one: after a pause, after the
database dropped the connection, or in a new process.

Following waits between pages for a wake-up: this process's commits, another
process's commits (PostgreSQL NOTIFY on the schema's channel; SQLite's
``PRAGMA data_version``, polled), or, rarely, a fallback poll.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

from instar.engine.door import Engine
from instar.errors import InstarError
from instar.models import Event
from instar.store.contract import EventFilter, Wake

log = logging.getLogger("instar.feed")


@dataclass(frozen=True)
class FeedSettings:
    page: int = 500
    """Events read per query."""
    poll_interval: float = 0.02
    """Seconds between cheap checks for another process's commit (SQLite's
    data_version) or for events held back by an older open transaction."""
    fallback_poll: float = 30.0
    """Seconds after which a follower reads again even without a wake-up: a
    safety net only. Every commit wakes followers (this process's through the
    engine, another's through NOTIFY or data_version, and a PostgreSQL
    listener that reconnects wakes them all), so that a follower of a quiet
    database sends no query (the dashboard's streams: issue 12)."""
    max_backoff: float = 5.0
    """Longest wait before reading again after the database failed a read."""


class EventFeed:
    """Pages of events after an id, once or following new ones as they commit."""

    def __init__(self, engine: Engine, settings: FeedSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or FeedSettings()

    def iterate(
        self,
        after: int | None = None,
        *,
        follow: bool = False,
        where: EventFilter | None = None,
        deadline: float | None = None,
    ) -> Iterator[Event]:
        """Events after the event ``after`` (None: from the first). Without
        ``follow`` it ends at the last committed event; with it, it waits for
        more, until ``deadline`` (a ``time.monotonic()`` value) if given."""
        cursor = _Cursor(self, after or 0, where or EventFilter())
        if not follow:
            yield from cursor.drain()
            return
        wake = threading.Event()
        unsubscribe = self.engine.subscribe(wake.set, Wake.EVENTS)
        try:
            while True:
                wake.clear()
                page = cursor.read_following()
                yield from page
                if len(page) == self.settings.page:
                    continue
                if not cursor.wait(wake.wait, wake.is_set, deadline):
                    return
        finally:
            unsubscribe()

    async def aiterate(
        self,
        after: int | None = None,
        *,
        follow: bool = False,
        where: EventFilter | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[Event]:
        """``iterate`` for asyncio: reads run in a thread, waits on the loop."""
        cursor = _Cursor(self, after or 0, where or EventFilter())
        if not follow:
            while True:
                page = await asyncio.to_thread(cursor.read)
                for event in page:
                    yield event
                if len(page) < self.settings.page:
                    return
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def wake_up() -> None:
            loop.call_soon_threadsafe(wake.set)

        unsubscribe = self.engine.subscribe(wake_up, Wake.EVENTS)
        try:
            while True:
                wake.clear()
                page = await asyncio.to_thread(cursor.read_following)
                for event in page:
                    yield event
                if len(page) == self.settings.page:
                    continue
                if not await cursor.wait_async(wake, deadline):
                    return
        finally:
            unsubscribe()


class _Cursor:
    """One reader's position and how it waits; shared by the sync and async faces."""

    def __init__(self, feed: EventFeed, after: int, where: EventFilter) -> None:
        self.engine = feed.engine
        self.settings = feed.settings
        self.after = after
        self.where = where
        self.failures = 0
        self.marker = self.engine.store.change_marker()
        self.held_back = False

    def read(self) -> list[Event]:
        # Committed events an older, still open transaction holds back come out
        # once it ends, which may send no wake-up (a transaction that wrote no
        # event sends none): poll till then. Asked before the read, not after: an
        # older transaction that ends between the two would otherwise leave its
        # juniors' events unread, and this reader waiting for a wake-up that
        # never comes. Asked first, such an event is either still held back
        # then (poll) or no longer (the read returns it); one committed later
        # comes with a wake-up of its own.
        held_back = self.engine.store.held_back_events()
        page = self.engine.read.events_since(self.after, self.settings.page, self.where)
        if page:
            self.after = page[-1].id
        self.held_back = held_back
        return page

    def drain(self) -> Iterator[Event]:
        while True:
            page = self.read()
            yield from page
            if len(page) < self.settings.page:
                return

    def read_following(self) -> list[Event]:
        """A page; a database that fails the read is waited for, not raised."""
        try:
            page = self.read()
        except InstarError:
            raise
        except Exception as exc:  # the driver's own errors: a dropped connection, a restart
            self.failures += 1
            delay = min(self.settings.max_backoff, 0.05 * 2**self.failures)
            log.warning("reading events failed (%s); trying again in %.2fs", exc, delay)
            time.sleep(delay)
            return []
        self.failures = 0
        return page

    def _should_read(self) -> bool:
        """Whether a cheap check says there may be more to read now."""
        if self.held_back:
            return True
        store = self.engine.store
        if not store.supports_listen:
            marker = store.change_marker()
            if marker != self.marker:
                self.marker = marker
                return True
        return False

    def wait(
        self,
        block: Callable[[float], bool],
        is_set: Callable[[], bool],
        deadline: float | None,
    ) -> bool:
        """Block until there may be more (True) or ``deadline`` passes (False)."""
        give_up = time.monotonic() + self.settings.fallback_poll
        while not is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            if now >= give_up:
                return True
            step = self.settings.poll_interval
            if deadline is not None:
                step = min(step, max(0.0, deadline - now))
            if block(step) or self._should_read():
                return True
        return True

    async def wait_async(self, wake: asyncio.Event, deadline: float | None) -> bool:
        give_up = time.monotonic() + self.settings.fallback_poll
        while not wake.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            if now >= give_up:
                return True
            step = self.settings.poll_interval
            if deadline is not None:
                step = min(step, max(0.0, deadline - now))
            try:
                await asyncio.wait_for(wake.wait(), step)
                return True
            except TimeoutError:
                if await asyncio.to_thread(self._should_read):
                    return True
        return True
