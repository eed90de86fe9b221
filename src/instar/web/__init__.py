"""The HTTP API: JSON under ``/api/v1``, bearer tokens, RFC 9457 problems and a
resumable Server-Sent Events stream of the timeline.

``create_app(app)`` returns the ASGI application (FastAPI, from the ``web``
extra: ``pip install instar[web]``), to run with ``instar serve`` or to mount
inside another application. ``instar.web.tokens`` needs no extra: the CLI
makes and revokes tokens with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from instar.app import App


def create_app(app: App, **settings: Any) -> FastAPI:
    """The ASGI application serving ``app``'s database (see ``instar.web.server``)."""
    from instar.web.server import create_app as create

    return create(app, **settings)
