"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error a client can cause maps to one status and one stable ``code`` it can
switch on: an ``InstarError`` carries both (``instar.errors``); request bodies
and parameters that fail validation are ``422 validation_failed`` with the
location of each bad field. Nothing a client sends produces a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from instar.errors import DatabaseUnavailable, InstarError, InvalidTransition, VersionMismatch

log = logging.getLogger("instar.web")

MEDIA_TYPE = "application/problem+json"
RETRY_AFTER_SECONDS = 5
"""What a 503 asks a client to wait before it tries again."""

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    412: "version_mismatch",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "too_many_requests",
    503: "unavailable",
}


class Problem(Exception):
    """An error raised by the API itself (not the engine): status, code, detail."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem document: ``type`` (``about:blank``, RFC 9457 4.2.1), ``title``,
    ``status``, ``detail``, ``code`` and any extension members."""
    body = {
        "type": "about:blank",
        "title": code.replace("_", " ").capitalize(),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def _instar_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InstarError)
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(exc, InvalidTransition):
        extra = {"job_id": exc.job_id, "from": exc.from_state, "to": exc.to_state}
        if exc.allowed_from:
            extra["allowed_from"] = list(exc.allowed_from)
    elif isinstance(exc, VersionMismatch):
        extra = {"job_id": exc.job_id, "expected": exc.expected, "found": exc.found}
    if exc.http_status == 503 or isinstance(exc, DatabaseUnavailable):
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if exc.http_status >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    return problem_response(exc.http_status, exc.code, str(exc), headers=headers, **extra)


def _problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(exc.status, exc.code, exc.detail, headers=exc.headers, **exc.extra)


def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"location": [str(part) for part in error["loc"]], "message": error["msg"]}
        for error in exc.errors()
    ]
    first = errors[0] if errors else {"location": [], "message": "invalid request"}
    where = ".".join(first["location"])
    return problem_response(422, "validation_failed", f"{where}: {first['message']}", errors=errors)


def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODES.get(exc.status_code, "error")
    return problem_response(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return problem_response(500, "internal_error", "the server failed; see its log")


def install(api: FastAPI) -> None:
    """Make every error of ``api`` a problem document."""
    api.add_exception_handler(InstarError, _instar_error)
    api.add_exception_handler(Problem, _problem)
    api.add_exception_handler(RequestValidationError, _invalid)
    api.add_exception_handler(StarletteHTTPException, _http)
    api.add_exception_handler(Exception, _unexpected)
