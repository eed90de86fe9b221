"""Prometheus metrics at ``GET /api/v1/metrics`` (text exposition format), when
the ``metrics`` extra (prometheus_client) is installed.

Read when Prometheus scrapes (``instar.metrics.InstarCollector``), from the
same sources as ``/stats/states``: live states through their partial indexes,
finished ones from the totals the maintenance leader rolls up from the
timeline; never a scan of every job, and nothing counted in this process
(several server processes give the same answer). Like every read, it needs a
token with the ``read`` scope (Prometheus: ``authorization: {credentials:
<token>}``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CollectorRegistry, generate_latest

from instar.metrics import InstarCollector
from instar.web.auth import needs
from instar.web.state import PREFIX, web_state
from instar.web.tokens import Principal

router = APIRouter(prefix=PREFIX, tags=["metrics"])
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}}},
)
def metrics(request: Request, _: Annotated[Principal, Depends(needs("read"))]) -> Response:
    """The metrics in Prometheus's text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(InstarCollector(web_state(request).app))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)
