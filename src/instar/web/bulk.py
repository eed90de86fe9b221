"""A verb on every job that matches a filter: previewed (how many match, how
many the lifecycle allows from their states), then applied on the server in
pages of ``PAGE`` jobs, its progress readable while it runs.

Only jobs that existed when the operation was asked for are touched: it works
below the largest job id of that moment. Each job goes through the same verb
as ``POST /jobs/{id}/<verb>``: a job whose state no longer allows it (it moved
meanwhile) is counted as refused and skipped.

Operations are kept in the database: any server process on it answers for
their progress, which the running server saves after each page and at least
every ``SAVE_EVERY`` seconds. When that server stops or dies, another (or the
same one restarted) takes the operation over once it has been quiet for
``QUIET`` seconds and resumes from the last job saved. A job the lost server
moved after its last save is not moved twice (its state no longer matches the
page it is read from), but it is missing from ``applied``: the counts may fall
short by what ``SAVE_EVERY`` seconds moved, and the timeline shows every move.
Finished operations are forgotten after ``KEPT_FOR``.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from instar.app import App
from instar.engine.verbs import VERBS
from instar.errors import (
    DatabaseTimeout,
    DatabaseUnavailable,
    InvalidTransition,
    JobNotFound,
    TransactionConflict,
)
from instar.lifecycle import State
from instar.models import BulkRecord
from instar.web.auth import check_queue, needs
from instar.web.problems import Problem
from instar.web.state import PREFIX, WebState, web_state
from instar.web.tokens import Principal

log = logging.getLogger("instar.web")
router = APIRouter(prefix=PREFIX, tags=["bulk"])
PAGE = 200
"""Jobs read per page while an operation runs."""
QUIET = 60.0
"""Seconds an unfinished operation's server may go without saving progress
before another server takes it over (a page takes well under a second)."""
KEPT_FOR = 30 * 86_400.0
"""Seconds a finished operation is kept after it was asked for (30 days)."""
SAVE_EVERY = 10.0
"""Seconds at most between two saves of progress, within a page too, so that a
slow page never looks quiet to the other servers (``QUIET``)."""
PASSING = (DatabaseUnavailable, DatabaseTimeout, TransactionConflict)
"""Errors that stop an operation for now: it resumes when taken over."""

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


class Progress(BaseModel):
    """How far an operation got: the counts, and where it resumes (the state
    it works through and the job id it reads below)."""

    applied: int = 0
    refused: int = 0
    done: bool = False
    error: str | None = None
    state: State | None = None
    before: int | None = None


def preview(app: App, body: BulkBody) -> BulkShape:
    """How many jobs ``body``'s filter matches now, by state, and how many its verb applies to."""
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


class Spec(BaseModel):
    """What was asked for, stored with the operation: the preview, who asked
    (the actor of every event it causes) and why."""

    preview: BulkShape
    actor: str
    reason: str | None


def _shape(record: BulkRecord) -> BulkShape:
    spec = Spec.model_validate_json(record.spec)
    progress = Progress.model_validate_json(record.progress)
    return spec.preview.model_copy(
        update={
            "applied": progress.applied,
            "refused": progress.refused,
            "done": progress.done,
            "error": progress.error,
        }
    )


class BulkRunner:
    """Runs the bulk operations of one server process, each on a thread of its
    own, saving progress after each page (and every ``SAVE_EVERY`` seconds);
    takes over those another server left unfinished."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.owner = f"server-{secrets.token_hex(8)}"
        self._running: set[str] = set()
        self._lock = threading.Lock()

    def start(self, record: BulkRecord) -> None:
        """Run ``record`` on a thread, unless this process runs it already."""
        with self._lock:
            if record.id in self._running:
                return
            self._running.add(record.id)
        threading.Thread(
            target=self._run, args=(record,), name=f"instar-bulk-{record.id}", daemon=True
        ).start()

    def take_over(self) -> int:
        """Start the unfinished operations whose server has been quiet for
        ``QUIET`` seconds; how many."""
        now = self.app.clock.now()
        taken = self.app.engine.store.take_bulks(self.owner, now, now - QUIET)
        for record in taken:
            log.warning("bulk operation %s: its server went quiet; taken over", record.id)
            self.start(record)
        return len(taken)

    def _run(self, record: BulkRecord) -> None:
        try:
            self._apply(record)
        except PASSING as exc:  # the database is away: a later turn takes it over
            log.warning("bulk operation %s stopped (%s); resumes when taken over", record.id, exc)
        except Exception as exc:  # its stored form cannot be read: it ends, saying why
            log.exception("bulk operation %s cannot run", record.id)
            self._save(record, Progress(done=True, error=f"cannot run: {exc}"))
        finally:
            with self._lock:
                self._running.discard(record.id)

    def _apply(self, record: BulkRecord) -> None:
        spec = Spec.model_validate_json(record.spec)
        shape = spec.preview
        progress = Progress.model_validate_json(record.progress)
        states = [s for s in State if s in VERBS[shape.verb][1]]
        if shape.filter.state:
            states = [s for s in states if s in shape.filter.state]
        if progress.state is not None:
            states = states[states.index(progress.state) :]
        apply = getattr(self.app, shape.verb)
        saved_at = time.monotonic()
        try:
            for state in states:
                if progress.state != state:
                    progress.state, progress.before = state, shape.until_id + 1
                while True:
                    page = self.app.jobs(
                        state, shape.filter.queue, shape.filter.name, PAGE, progress.before
                    )
                    for job in page:  # newest first: each job is where the next read starts
                        try:
                            apply(job.id, spec.actor, reason=spec.reason)
                            progress.applied += 1
                        except (InvalidTransition, JobNotFound):
                            progress.refused += 1
                        progress.before = job.id
                        if time.monotonic() - saved_at > SAVE_EVERY:
                            if not self._save(record, progress):
                                return
                            saved_at = time.monotonic()
                    if len(page) < PAGE:
                        break
                    if not self._save(record, progress):
                        return
                    saved_at = time.monotonic()
        except PASSING:
            raise
        except Exception as exc:  # not a passing outage: it would fail again; it ends here
            progress.error = str(exc)
            log.warning("bulk %s %s stopped: %s", shape.verb, record.id, exc)
        progress.done = True
        self._save(record, progress)

    def _save(self, record: BulkRecord, progress: Progress) -> bool:
        """Save progress; False when another server has taken the operation over."""
        saved = self.app.engine.store.save_bulk(
            record.id, self.owner, progress.model_dump_json(), progress.done, self.app.clock.now()
        )
        if not saved:
            log.warning("bulk operation %s was taken over by another server", record.id)
        return saved


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
    if body.dry_run:
        response.status_code = 200
        return preview(web.app, body)
    started = begin(web, body, who.name)
    response.headers["Location"] = f"{request.url.path}/{started.id}"
    return started


def begin(web: WebState, body: BulkBody, actor: str) -> BulkShape:
    """Start ``body``'s operation on this server (``actor``: who asked, the
    actor of every event it causes); its preview, with its id."""
    shape = preview(web.app, body)
    shape.id = secrets.token_hex(8)
    now = web.app.clock.now()
    record = BulkRecord(
        id=shape.id,
        spec=Spec(preview=shape, actor=actor, reason=body.reason).model_dump_json(),
        progress=Progress().model_dump_json(),
        done=False,
        owner=web.bulks.owner,
        created_at=now,
        heartbeat_at=now,
    )
    web.app.engine.store.add_bulk(record, forget_before=now - KEPT_FOR)
    web.bulks.start(record)
    return shape


def progress(web: WebState, operation_id: str) -> BulkShape | None:
    """An operation's counts as last saved (None: no such operation)."""
    record = web.app.engine.store.bulk(operation_id)
    return None if record is None else _shape(record)


@router.get("/bulk/{operation_id}", response_model=BulkShape)
def bulk_progress(
    request: Request, operation_id: str, who: Annotated[Principal, Depends(needs("read"))]
) -> BulkShape:
    """An operation's counts as last saved (after each page, and every 10 s), ``done`` once it
    has gone through every page."""
    shape = progress(web_state(request), operation_id)
    if shape is None:
        raise Problem(404, "bulk_not_found", f"no bulk operation {operation_id!r}")
    if who.queue is not None:
        check_queue(who, shape.filter.queue or "(every queue)")
    return shape
