"""The ASGI application: every router under ``/api/v1``, errors as problems,
bodies guarded, the OpenAPI 3.1 document at ``/api/v1/openapi.json``.

FastAPI's interactive docs pages load their scripts from a CDN, so they are
off: nothing this server sends makes a browser ask another host.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import FastAPI

from instar.app import App
from instar.web import admin, bulk, jobs, operations, stats, stream
from instar.web.group_commit import GroupCommit
from instar.web.guard import BodyGuard
from instar.web.pages import KEY_NAME
from instar.web.problems import install
from instar.web.state import WebSettings, WebState

PREFIX = "/api/v1"


def create_app(app: App, **settings: Any) -> FastAPI:
    """The HTTP API on ``app``'s database; ``settings``: the fields of
    ``WebSettings`` (``auth=False`` for local development only)."""
    chosen = WebSettings(**settings)
    key = app.engine.store.key(KEY_NAME, lambda: secrets.token_hex(32))
    api = FastAPI(
        title="Instar",
        summary="Durable jobs with an explicit lifecycle",
        version="1",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    api.state.instar = WebState(app, chosen, bytes.fromhex(key), GroupCommit(app))
    install(api)
    routers = (operations, jobs, bulk, stats, stream, admin)
    for module in routers:
        api.include_router(module.router, prefix=PREFIX)
    try:
        from instar.web import metrics
    except ImportError:  # the metrics extra is not installed: no /metrics
        pass
    else:
        api.include_router(metrics.router, prefix=PREFIX)
    api.add_middleware(BodyGuard, max_bytes=chosen.max_body_bytes)
    return api
