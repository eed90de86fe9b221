"""The rest of the API an operator uses: health, the lifecycle itself, queues,
workers and awakeables."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib.metadata import version
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from instar.engine.verbs import VERBS
from instar.payload import encode
from instar.schemas import AwakeableShape, QueueShape, lifecycle_json
from instar.vocabulary import AwakeableState
from instar.web.auth import check_queue, needs
from instar.web.problems import problem_response
from instar.web.state import PREFIX, web_state
from instar.web.tokens import Principal

router = APIRouter(prefix=PREFIX)


class WorkerShape(BaseModel):
    """A worker heard of lately: ``leases`` is how many jobs it holds now."""

    id: str
    host: str
    pid: int
    concurrency: int
    queues: list[str] | None
    handlers: list[str]
    started_at: datetime
    seen_at: datetime
    leases: int


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: Any = None


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=10_000)


class QueueChange(BaseModel):
    queue: str
    paused: bool
    changed: bool


@router.get("/health", tags=["meta"])
def health(request: Request) -> JSONResponse:
    """200 when the server runs and its database answers; 503 when it does not.
    Needs no token."""
    try:
        web_state(request).app.reader.last_event_id()
    except Exception as exc:
        return problem_response(
            503, "unavailable", f"the database does not answer: {exc}", headers={"Retry-After": "5"}
        )
    return JSONResponse({"status": "ok"})


@router.get("/meta", tags=["meta"])
def meta(request: Request, _: Annotated[Principal, Depends(needs("read"))]) -> dict[str, Any]:
    """The server's version, its backend, and the lifecycle table: every state
    with its kind and moves, and each verb with the state it leads to and the
    states it applies to."""
    store = web_state(request).app.engine.store
    return {
        "version": version("instar"),
        "backend": "postgresql" if store.supports_listen else "sqlite",
        "lifecycle": lifecycle_json(),
        "verbs": [
            {"verb": verb, "to": to.value, "from": sorted(s.value for s in sources)}
            for verb, (to, sources) in VERBS.items()
        ],
    }


@router.get("/queues", response_model=list[QueueShape], tags=["queues"])
def queues(request: Request, _: Annotated[Principal, Depends(needs("read"))]) -> list[QueueShape]:
    """Every queue with its jobs counted by state, whether it is paused, and the
    age of its oldest ready job."""
    app = web_state(request).app
    return [QueueShape.of(q, app.clock.now()) for q in app.queues()]


@router.post("/queues/{name}/pause", response_model=QueueChange, tags=["queues"])
def pause_queue(
    request: Request, name: str, who: Annotated[Principal, Depends(needs("operate"))]
) -> QueueChange:
    """Workers claim nothing more from the queue; running jobs go on."""
    check_queue(who, name)
    changed = web_state(request).app.pause_queue(name)
    return QueueChange(queue=name, paused=True, changed=changed)


@router.post("/queues/{name}/resume", response_model=QueueChange, tags=["queues"])
def resume_queue(
    request: Request, name: str, who: Annotated[Principal, Depends(needs("operate"))]
) -> QueueChange:
    check_queue(who, name)
    changed = web_state(request).app.resume_queue(name)
    return QueueChange(queue=name, paused=False, changed=changed)


@router.get("/workers", response_model=list[WorkerShape], tags=["workers"])
def workers(request: Request, _: Annotated[Principal, Depends(needs("read"))]) -> list[WorkerShape]:
    """Workers heard of in the last 30 seconds."""
    app = web_state(request).app
    return [
        WorkerShape(
            id=w.id,
            host=w.host,
            pid=w.pid,
            concurrency=w.concurrency,
            queues=None if w.queues is None else list(w.queues),
            handlers=list(w.handlers),
            started_at=datetime.fromtimestamp(w.started_at, UTC),
            seen_at=datetime.fromtimestamp(w.seen_at, UTC),
            leases=len(app.reader.claimed_by(w.id)),
        )
        for w in app.live_workers()
    ]


@router.get("/awakeables", response_model=list[AwakeableShape], tags=["awakeables"])
def awakeables(
    request: Request,
    who: Annotated[Principal, Depends(needs("read"))],
    state: AwakeableState = AwakeableState.PENDING,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AwakeableShape]:
    """Awakeables in one state, oldest first: by default the inbox of those
    waiting for an answer (of the token's queue's jobs when it is limited to one)."""
    found = web_state(request).app.reader.awakeables_in_state(state, limit, who.queue)
    return [AwakeableShape.of(a) for a in found]


@router.get("/awakeables/{awakeable_id}", response_model=AwakeableShape, tags=["awakeables"])
def get_awakeable(
    request: Request, awakeable_id: str, who: Annotated[Principal, Depends(needs("read"))]
) -> AwakeableShape:
    _check_job_queue(request, who, awakeable_id)
    return AwakeableShape.of(web_state(request).app.reader.awakeable(awakeable_id))


@router.post(
    "/awakeables/{awakeable_id}/resolve", response_model=AwakeableShape, tags=["awakeables"]
)
def resolve(
    request: Request,
    awakeable_id: str,
    body: ResolveBody,
    who: Annotated[Principal, Depends(needs("resolve"))],
) -> AwakeableShape:
    """Answer the awakeable with ``value``; the job waiting on it wakes. 409
    ``awakeable_already_completed`` when it was settled before."""
    app = web_state(request).app
    _check_job_queue(request, who, awakeable_id)
    encode(body.value, what="the signal value", max_bytes=app.max_payload_bytes)
    return AwakeableShape.of(app.resolve(awakeable_id, body.value, actor=who.name))


@router.post(
    "/awakeables/{awakeable_id}/reject", response_model=AwakeableShape, tags=["awakeables"]
)
def reject(
    request: Request,
    awakeable_id: str,
    body: RejectBody,
    who: Annotated[Principal, Depends(needs("resolve"))],
) -> AwakeableShape:
    """Refuse the awakeable; the waiting handler raises SignalRejected(reason)."""
    _check_job_queue(request, who, awakeable_id)
    return AwakeableShape.of(web_state(request).app.reject(awakeable_id, body.reason, who.name))


def _check_job_queue(request: Request, who: Principal, awakeable_id: str) -> None:
    if who.queue is not None:
        app = web_state(request).app
        check_queue(who, app.get(app.reader.awakeable(awakeable_id).job_id).queue)
