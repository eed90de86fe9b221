"""The bare endpoint the HTTP API is measured against: the same framework and
server, one route returning a constant (``uvicorn bench.web_bare:app``), written
the way the framework's own first example is (``async def``: no thread hand-off)."""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/constant")
async def constant() -> dict[str, int]:
    return {"id": 1}


@app.get("/constant-def")
def constant_def() -> dict[str, int]:
    """The same as a plain ``def``, which the framework runs on a thread (shown
    beside the other: the hand-off is most of its cost on this machine kind)."""
    return {"id": 1}
