"""What every route of one server shares: the App, the settings, the page-token
key, the group commit of enqueues, the runner of bulk operations and the count
of open event streams; and how a route reads the database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from instar.app import App
from instar.web.group_commit import GroupCommit

if TYPE_CHECKING:  # the bulk module reads this one's state
    from instar.web.bulk import BulkRunner

T = TypeVar("T")

PREFIX = "/api/v1"
"""Where every route of the API lives."""


@dataclass(frozen=True, slots=True)
class WebSettings:
    """``auth``: False only for local development (``--no-auth``).
    ``max_body_bytes``: the largest request body (the App's payload limit and
    room for the envelope). ``max_streams``: event streams open at once (more
    get 503). ``stream_buffer``: events held for one slow stream client before
    it is cut off (it resumes with Last-Event-ID). ``keepalive``: seconds
    between comments on a quiet stream. ``rollup_interval``: seconds between
    the server's own rollups of the timeline into the state flows."""

    auth: bool = True
    max_body_bytes: int = 2 * 1024 * 1024
    max_streams: int = 100
    stream_buffer: int = 10_000
    keepalive: float = 15.0
    rollup_interval: float = 2.0


@dataclass(slots=True)
class WebState:
    app: App
    settings: WebSettings
    page_key: bytes
    enqueues: GroupCommit
    bulks: BulkRunner
    streams: int = 0


def web_state(request: Request) -> WebState:
    state = request.app.state.instar
    assert isinstance(state, WebState)
    return state


async def read(web: WebState, reading: Callable[..., T], *args: Any) -> T:
    """``reading(*args)``, a bounded read of the database: on the event loop
    where reads are local (SQLite: tens of microseconds, while a hand-off to a
    thread and back costs several hundred on this machine kind, as `make bench`'s
    HTTP figures show), on a thread where each is a network round trip
    (PostgreSQL), so that the loop never waits on the network."""
    if web.app.engine.store.local_reads:
        return reading(*args)
    return await run_in_threadpool(reading, *args)
