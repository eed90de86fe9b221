"""The global timeline over HTTP: pages of events after an id, and the same as a
live Server-Sent Events stream (WHATWG HTML, 9.2). A stream resumed from an id
older than the last event retention pruned starts with a ``gap`` frame: the
client may have missed events up to that id and should reload what it shows.

Each frame's ``id:`` is the event's id and its ``data:`` one line of compact
JSON (a newline inside a value is escaped by the encoder, so no value can end a
frame or forge another). A client that reconnects sends ``Last-Event-ID`` and
gets every event after it once: the stream reads the events table through the
engine's feed, which resumes exactly after an id, woken by LISTEN/NOTIFY on
PostgreSQL and ``data_version`` on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from instar.lifecycle import State
from instar.models import Event
from instar.registry.limits import MAX_ID
from instar.schemas import EventShape
from instar.store.contract import EventFilter
from instar.web.auth import needs, principal, queue_filter
from instar.web.problems import Problem
from instar.web.state import PREFIX, WebState, web_state
from instar.web.tokens import Principal

log = logging.getLogger("instar.web")
router = APIRouter(prefix=PREFIX, tags=["events"])
MAX_PAGE = 1000
RECHECK = 5.0
"""Seconds at most between two checks that a stream's token is still live,
while events go out (a quiet stream checks at each keepalive)."""
RETRY = b"retry: 1000\n\n"
"""Tells a browser's EventSource to reconnect one second after a lost stream."""
BATCH = 500
"""Frames sent in one write at most, when a client is behind (each write is a
chunk through the server: one per event made the framing cost as much as the
read)."""


class EventList(BaseModel):
    """Events after ``after`` in commit order; ``last``: the id to pass next.
    ``gap_through``: retention pruned events up to this id, after ``after``:
    some this page would have held are gone (null: none)."""

    events: list[EventShape]
    last: int
    gap_through: int | None = None


def _gap(web: WebState, after: int) -> int | None:
    """The last event id pruned, when it is past ``after`` (None otherwise)."""
    through = web.app.reader.pruning_marks().pruned_through
    return through if through > after else None


def gap_frame(after: int, through: int) -> bytes:
    """An SSE frame (no ``id:``, so the client's Last-Event-ID stays) saying that
    events after ``after`` up to ``through`` may have been pruned."""
    data = json.dumps({"after": after, "pruned_through": through})
    return f"event: gap\ndata: {data}\n\n".encode()


def _state(text: str | None) -> State | None:
    if text is None:
        return None
    try:
        return State(text)
    except ValueError:
        raise Problem(
            400,
            "invalid_filter",
            f"unknown state {text!r}; states are {', '.join(s.value for s in State)}",
        ) from None


@router.get("/events", response_model=EventList)
def events(
    request: Request,
    who: Annotated[Principal, Depends(needs("read"))],
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    job: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    queue: str | None = None,
    state: str | None = None,
    name: str | None = None,
) -> EventList:
    """A page of the timeline of every job after the event ``after`` (of the
    token's queue's jobs when it is limited to one)."""
    queue = queue_filter(who, queue)
    app = web_state(request).app
    found: list[Event] = []
    for event in app.events(after, job=job, queue=queue, state=_state(state), name=name):
        found.append(event)
        if len(found) == limit:
            break
    last = found[-1].id if found else after
    gap = _gap(web_state(request), after)
    return EventList(events=[EventShape.of(e) for e in found], last=last, gap_through=gap)


def frame(event: Event) -> bytes:
    """One SSE frame: ``id``, ``event: transition`` and the event as JSON."""
    data = json.dumps(EventShape.of(event).as_json(), separators=(",", ":"))
    return f"id: {event.id}\nevent: transition\ndata: {data}\n\n".encode()


@router.get(
    "/events/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream(
    request: Request,
    who: Annotated[Principal, Depends(needs("read"))],
    after: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    job: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    queue: str | None = None,
    state: str | None = None,
    name: str | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Events as they commit, from after ``Last-Event-ID`` (or ``after``; without
    either, from now on). Comments keep a quiet stream open. 503 when too many
    streams are open; a client too slow to keep up is cut off and resumes. A
    token limited to a queue follows that queue's jobs."""
    queue = queue_filter(who, queue)
    start = after
    if last_event_id is not None:
        text = last_event_id.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 19:
            raise Problem(
                400, "bad_request", f"Last-Event-ID must be an event id, not {text!r:.40}"
            )
        start = int(text)
    where = EventFilter(job_id=job, queue=queue, state=_state(state), name=name)

    async def still_allowed() -> bool:
        try:
            return (await principal(request)).grants("read")
        except Problem:
            return False

    return await open_stream(web_state(request), start, where, still_allowed)


async def open_stream(
    web: WebState,
    start: int | None,
    where: EventFilter,
    still_allowed: Callable[[], Awaitable[bool]],
) -> StreamingResponse:
    """The live stream of the events after ``start`` (None: from now on) that
    ``where`` keeps; 503 when ``max_streams`` are open already. The stream ends
    once ``still_allowed`` says no (its token was revoked), asked before events
    go out at most every ``RECHECK`` seconds, and at each keepalive."""
    gap = None
    if start is None:
        start = await asyncio.to_thread(web.app.last_event_id)
    else:
        gap = await asyncio.to_thread(_gap, web, start)
    if web.streams >= web.settings.max_streams:
        raise Problem(
            503,
            "unavailable",
            f"{web.streams} event streams are open, the most this server holds; try again",
            headers={"Retry-After": "5"},
        )
    web.streams += 1
    feed = web.app.events_async(
        start, follow=True, job=where.job_id, queue=where.queue, state=where.state, name=where.name
    )
    opening = gap_frame(start, gap) if gap is not None else b""
    return StreamingResponse(
        _frames(web, feed, still_allowed, RETRY + opening),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _frames(
    web: WebState,
    feed: AsyncIterator[Event],
    still_allowed: Callable[[], Awaitable[bool]],
    opening: bytes = b"",
) -> AsyncIterator[bytes]:
    """Frames from a bounded buffer that a task fills from the feed; a comment
    when nothing came for ``keepalive`` seconds; the end when the buffer filled
    or the feed failed (the client resumes from the last id it got)."""
    buffer: asyncio.Queue[Event | None] = asyncio.Queue(web.settings.stream_buffer)

    async def fill() -> None:
        try:
            async for event in feed:
                if buffer.full():
                    break
                buffer.put_nowait(event)
        except Exception as exc:  # the database went away: the client resumes later
            log.warning("an event stream ends: %s", exc)
        await buffer.put(None)  # after every event put before it

    filler = asyncio.create_task(fill())
    try:
        yield b": stream open\n\n" + opening
        checked = time.monotonic()
        while True:
            try:
                event = await asyncio.wait_for(buffer.get(), web.settings.keepalive)
            except TimeoutError:
                if not await still_allowed():
                    return
                checked = time.monotonic()
                yield b": keepalive\n\n"
                continue
            if time.monotonic() - checked >= RECHECK:
                if not await still_allowed():
                    return
                checked = time.monotonic()
            # Every event already buffered goes out in one write (up to BATCH).
            frames: list[bytes] = []
            while event is not None:
                frames.append(frame(event))
                if len(frames) == BATCH or buffer.empty():
                    break
                event = buffer.get_nowait()
            if frames:
                yield b"".join(frames)
            if event is None:
                yield b"event: overflow\ndata: {}\n\n"
                return
    finally:
        web.streams -= 1
        filler.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await filler
        aclose = getattr(feed, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
