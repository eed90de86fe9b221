"""What every route of one server shares: the App, the settings, the page-token
key and the count of open event streams."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from instar.app import App


@dataclass(frozen=True, slots=True)
class WebSettings:
    """``auth``: False only for local development (``--no-auth``).
    ``max_body_bytes``: the largest request body (the App's payload limit and
    room for the envelope). ``max_streams``: event streams open at once (more
    get 503). ``stream_buffer``: events held for one slow stream client before
    it is cut off (it resumes with Last-Event-ID). ``keepalive``: seconds
    between comments on a quiet stream."""

    auth: bool = True
    max_body_bytes: int = 2 * 1024 * 1024
    max_streams: int = 100
    stream_buffer: int = 10_000
    keepalive: float = 15.0


@dataclass(slots=True)
class WebState:
    app: App
    settings: WebSettings
    page_key: bytes
    streams: int = 0
    operations: dict[str, Any] = field(default_factory=dict)  # bulk operations, by id


def web_state(request: Request) -> WebState:
    state = request.app.state.instar
    assert isinstance(state, WebState)
    return state
