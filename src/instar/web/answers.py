"""Answers made of a shape serialised once, by pydantic's core.

A route that returns a model has FastAPI validate it again against its
``response_model`` and then serialise it; a shape built from the store's own
records is valid by construction, so the routes on the hot path (a job read or
created) hand back the bytes instead (the route still declares its
``response_model`` for the OpenAPI document, which the schemathesis test
holds every answer to)."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import Response
from pydantic import BaseModel


def answer(
    shape: BaseModel, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``shape`` as an ``application/json`` response."""
    return Response(
        shape.model_dump_json(), status, dict(headers or {}), media_type="application/json"
    )
