"""A verb on every job that matches a filter: previewed (how many match, how
many the lifecycle allows from their states), then applied on the server in
pages of ``PAGE`` jobs, its progress readable while it runs.

Only jobs that existed when the operation was asked for are touched: it works
below the largest job id of that moment. Each job goes through the same verb
as ``POST /jobs/{id}/<verb>``: a job whose state no longer allows it (it moved
meanwhile) is counted as refused and skipped. Operations live in the server
process that runs them: another process, or this one after a restart, does not
know them (404).
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from instar.app import App
from instar.engine.verbs import VERBS
from instar.errors import InstarError, InvalidTransition, JobNotFound
from instar.lifecycle import State
from instar.web.auth import check_queue, needs
from instar.web.problems import Problem
from instar.web.state import PREFIX, web_state
from instar.web.tokens import Principal

log = logging.getLogger("instar.web")
router = APIRouter(prefix=PREFIX, tags=["bulk"])
PAGE = 200
"""Jobs read per page while an operation runs."""
KEPT = 1000
"""Finished operations a server remembers (the oldest are forgotten first)."""

Verb = Literal["cancel", "pause", "resume", "retry", "stop"]


class BulkFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: list[State] = Field(default_factory=list)
    queue: str | None = None
    name: str | None = None

    def is_empty(self) -> bool:
        return not (self.state or self.queue or self.name)


class BulkBody(BaseModel):
    """``all: true`` is needed to act on every job (an empty filter)."""

    model_config = ConfigDict(extra="forbid")

    verb: Verb
    filter: BulkFilter = Field(default_factory=BulkFilter)
    dry_run: bool = False
    all: bool = False
    reason: str | None = Field(default=None, max_length=10_000)


class BulkShape(BaseModel):
    """``matching``: jobs the filter matched when asked; ``allowed``: those whose
    state the verb applies to; while it runs, ``applied`` and ``refused`` (their
    state changed meanwhile) grow until ``done``."""

    id: str | None
    verb: Verb
    filter: BulkFilter
    until_id: int
    matching: int
    allowed: int
    by_state: dict[State, int]
    applied: int = 0
    refused: int = 0
    done: bool = False
    error: str | None = None


@dataclass
class _Operation:
    shape: BulkShape
    actor: str
    reason: str | None


def _preview(app: App, body: BulkBody) -> BulkShape:
    until = app.reader.last_job_id()
    counts = app.reader.count_matching(body.filter.queue, body.filter.name, until)
    wanted = set(body.filter.state) or set(State)
    matching = {s: n for s, n in counts.items() if s in wanted}
    sources = VERBS[body.verb][1]
    return BulkShape(
        id=None,
        verb=body.verb,
        filter=body.filter,
        until_id=until,
        matching=sum(matching.values()),
        allowed=sum(n for s, n in matching.items() if s in sources),
        by_state=matching,
    )


def _run(app: App, operation: _Operation) -> None:
    shape = operation.shape
    states = [s for s in State if s in VERBS[shape.verb][1]]
    if shape.filter.state:
        states = [s for s in states if s in shape.filter.state]
    apply = getattr(app, shape.verb)
    try:
        for state in states:
            before = shape.until_id + 1
            while True:
                page = app.jobs(state, shape.filter.queue, shape.filter.name, PAGE, before)
                for job in page:
                    try:
                        apply(job.id, operation.actor, reason=operation.reason)
                        shape.applied += 1
                    except (InvalidTransition, JobNotFound):
                        shape.refused += 1
                if len(page) < PAGE:
                    break
                before = page[-1].id
    except InstarError as exc:
        shape.error = str(exc)
        log.warning("bulk %s %s stopped: %s", shape.verb, shape.id, exc)
    finally:
        shape.done = True


@router.post("/bulk", response_model=BulkShape, status_code=202)
def bulk(
    request: Request,
    response: Response,
    body: BulkBody,
    who: Annotated[Principal, Depends(needs("operate"))],
) -> BulkShape:
    """A dry run answers 200 with the preview; otherwise the operation starts
    (202, ``Location`` of its progress)."""
    if body.filter.is_empty() and not body.all:
        raise Problem(
            400,
            "invalid_filter",
            "an empty filter matches every job: give a state, queue or name, or all: true",
        )
    if who.queue is not None:
        check_queue(who, body.filter.queue or "(every queue)")
    web = web_state(request)
    preview = _preview(web.app, body)
    if body.dry_run:
        response.status_code = 200
        return preview
    preview.id = secrets.token_hex(8)
    operation = _Operation(preview, who.name, body.reason)
    running = web.operations
    finished = [key for key, op in running.items() if op.shape.done]
    for key in finished[: max(0, len(running) - KEPT)]:
        del running[key]
    running[preview.id] = operation
    threading.Thread(
        target=_run, args=(web.app, operation), name=f"instar-bulk-{preview.id}", daemon=True
    ).start()
    response.headers["Location"] = f"{request.url.path}/{preview.id}"
    return preview


@router.get("/bulk/{operation_id}", response_model=BulkShape)
def bulk_progress(
    request: Request, operation_id: str, who: Annotated[Principal, Depends(needs("read"))]
) -> BulkShape:
    operation = web_state(request).operations.get(operation_id)
    if not isinstance(operation, _Operation):
        raise Problem(
            404,
            "bulk_not_found",
            f"no bulk operation {operation_id!r} on this server (they live in the "
            "server process that runs them)",
        )
    if who.queue is not None:
        check_queue(who, operation.shape.filter.queue or "(every queue)")
    return operation.shape
