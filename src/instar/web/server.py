"""The ASGI application: every router under ``/api/v1``, errors as problems,
bodies guarded, the OpenAPI 3.1 document at ``/api/v1/openapi.json``.

FastAPI's interactive docs pages load their scripts from a CDN, so they are
off: nothing this server sends makes a browser ask another host.

While it serves, the server rolls the timeline up into the state flows every
``rollup_interval`` seconds, as a worker's maintenance does (counted once
whoever rolls up), so that the counts and throughput are current with no
worker running, and takes over the bulk operations a stopped server left
unfinished. Mounted inside another application, whose lifespan does not run the
mounted one's, it leaves the rollup to the workers and the takeover to the
other servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from instar.app import App
from instar.maintenance.state_flows import StateFlows
from instar.web import admin, bulk, dashboard, jobs, operations, stats, stream
from instar.web.bulk import BulkRunner
from instar.web.group_commit import GroupCommit
from instar.web.guard import BodyGuard
from instar.web.pages import KEY_NAME
from instar.web.problems import install
from instar.web.state import PREFIX, WebSettings, WebState

log = logging.getLogger("instar.web")


async def _housekeeping(app: App, bulks: BulkRunner, interval: float) -> None:
    """Every ``interval`` seconds: roll the timeline up, and take over the bulk
    operations a stopped server left unfinished."""
    flows = StateFlows(app.engine)
    while True:
        for chore in (flows.run_once, bulks.take_over):
            try:
                await asyncio.to_thread(chore)
            except Exception as exc:  # the database is away: the next turn tries again
                log.warning("%s failed (%s); will try again", chore.__qualname__, exc)
        await asyncio.sleep(interval)


def create_app(app: App, **settings: Any) -> FastAPI:
    """The HTTP API on ``app``'s database; ``settings``: the fields of
    ``WebSettings`` (``auth=False`` for local development only)."""
    chosen = WebSettings(**settings)
    key = app.engine.store.key(KEY_NAME, lambda: secrets.token_hex(32))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        rolling = asyncio.create_task(_housekeeping(app, bulks, chosen.rollup_interval))
        try:
            yield
        finally:
            rolling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rolling

    api = FastAPI(
        lifespan=lifespan,
        title="Instar",
        summary="Durable jobs with an explicit lifecycle",
        version="1",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    bulks = BulkRunner(app)
    api.state.instar = WebState(app, chosen, bytes.fromhex(key), GroupCommit(app), bulks)
    install(api)
    routers = [jobs.router, operations.router, bulk.router, stats.router, stream.router]
    routers.append(admin.router)
    try:
        from instar.web import metrics
    except ImportError:  # the metrics extra is not installed: no /metrics
        pass
    else:
        routers.append(metrics.router)
    # The routes join the application's own list rather than through
    # include_router: FastAPI 0.165 matches each request through every included
    # router in turn, twice, which cost a request several hundred microseconds
    # more than a route of the application itself (measured: a constant route
    # 313 µs of CPU as the app's first route, 559-929 µs behind the included
    # routers). The hot routes (jobs) come first.
    for router in routers:
        api.router.routes.extend(router.routes)
    dashboard.install(api, api.state.instar)
    api.add_middleware(BodyGuard, max_bytes=chosen.max_body_bytes)
    return api
