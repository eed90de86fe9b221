"""The dashboard's pages and the forms they post.

Every page is rendered on the server (Jinja2, autoescaped) and reads the
database once per request through the same reads as the HTTP API; pages stay
current through the page script, which follows the event stream
(``/ui/events``) and asks for a page's live parts again at most once per burst
of events (``static/dashboard.js``), never on a timer while nothing moves.

A form acts through the same App calls as the API, as the session's token
(its name is the actor in the timeline), after the CSRF check; what the
lifecycle table refuses comes back as the page's part with the reason shown.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from instar.engine.verbs import VERBS
from instar.errors import (
    AwakeableNotFound,
    InstarError,
    InvalidOption,
    InvalidTransition,
    JobNotFound,
    SignalAlreadySettled,
)
from instar.lifecycle import JOBS, MEANINGS, State
from instar.maintenance.state_flows import ROLLUP
from instar.models import Job
from instar.registry.limits import MAX_ID
from instar.store.contract import EventFilter
from instar.vocabulary import AwakeableState
from instar.web.bulk import BulkBody, BulkFilter, begin, preview, progress
from instar.web.dashboard import present, svg
from instar.web.dashboard.session import (
    LOGIN_COOKIE,
    Forbidden,
    LoginNeeded,
    Session,
    check_login_form,
    check_post,
    current,
    log_in,
    login_form,
    set_cookie,
)
from instar.web.state import WebState, web_state
from instar.web.stream import open_stream

router = APIRouter(include_in_schema=False)
PAGE = 50
"""Jobs on one page of the job list."""
SAMPLE = 5000
"""Recent events the overview's wait and run times are computed from."""
WINDOWS = {"15m": 900, "1h": 3600, "24h": 86400, "7d": 7 * 86400}
WORKERS_SEEN_WITHIN = 30.0

templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters["duration"] = present.duration
templates.filters["pretty"] = present.pretty
templates.globals.update(
    States=list(State), VERBS=VERBS, MEANINGS=MEANINGS, final_states=JOBS.final
)

Current = Annotated[Session, Depends(current)]


def _when(value: datetime | float | None) -> str:
    if value is None:
        return present.NONE
    if isinstance(value, float | int):
        value = datetime.fromtimestamp(value, UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


templates.filters["when"] = _when


def render(
    request: Request, session: Session, name: str, status: int = 200, **context: Any
) -> HTMLResponse:
    """The template ``name`` as a response, with what every page shows."""
    page = templates.get_template(name).render(
        session=session,
        path=request.url.path,
        fragment=request.headers.get("hx-request") == "true",
        secure_cookie=request.url.scheme == "https",
        **context,
    )
    response = HTMLResponse(page, status)
    if session.cookie is not None:
        set_cookie(response, session.cookie, request.url.scheme == "https")
    return response


def _queue(session: Session, asked: str | None) -> str | None:
    """The queue a listing reads: the token's own when it is limited to one."""
    return session.principal.queue or asked


# -- signing in ---------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return _login_form(request, next, None, 200)


def _login_form(request: Request, next: str, problem: str | None, status: int) -> HTMLResponse:
    csrf, nonce = login_form(request)
    page = templates.get_template("login.html").render(
        next=_local(next), problem=problem, csrf=csrf
    )
    response = HTMLResponse(page, status)
    set_cookie(response, nonce, request.url.scheme == "https", LOGIN_COOKIE, 3600)
    return response


@router.post("/login")
async def login(
    request: Request,
    token: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    check_login_form(request, csrf)
    cookie = await log_in(request, token)
    if cookie is None:
        return _login_form(request, next, "That token is unknown or revoked.", 401)
    response = RedirectResponse(_local(next), 303)
    set_cookie(response, cookie, request.url.scheme == "https")
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@router.post("/logout")
async def logout(request: Request, session: Current, csrf: Annotated[str, Form()] = "") -> Response:
    await check_post(request, session, None, csrf)
    response = RedirectResponse("/login", 303)
    response.delete_cookie("instar_session", path="/")
    return response


def _local(target: str) -> str:
    """A path on this server (never another host: no open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def login_redirect(request: Request, _: Exception) -> Response:
    """Where a request without a session goes: the login page (htmx: the whole page)."""
    target = "/login?" + urlencode({"next": request.url.path})
    if request.headers.get("hx-request") == "true" or request.url.path.startswith("/ui/"):
        return Response(status_code=401, headers={"HX-Redirect": target})
    return RedirectResponse(target, 303)


@router.get("/favicon.ico")
def favicon() -> Response:
    return RedirectResponse("/ui/static/favicon.svg", 301)


# -- the live parts ------------------------------------------------------------------


@router.get("/ui/events")
async def events(
    request: Request,
    session: Current,
    after: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    job: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    """The timeline as it commits (SSE), after ``Last-Event-ID`` or ``after``."""
    header = request.headers.get("last-event-id", "").strip()
    start = int(header) if header.isascii() and header.isdigit() and len(header) < 19 else after
    where = EventFilter(job_id=job, queue=session.principal.queue)

    async def still_allowed() -> bool:
        try:
            await current(request)
        except (LoginNeeded, Forbidden):
            return False
        return True

    return await open_stream(web_state(request), start, where, still_allowed)


def _counts(web: WebState, queue: str | None) -> dict[str, Any]:
    read = web.app.reader
    by_queue: dict[str, dict[str, int]] = {}
    totals = dict.fromkeys((s.value for s in State), 0)
    for name, state, count in [*read.live_counts(), *read.finished_totals()]:
        if queue is not None and name != queue:
            continue
        by_queue.setdefault(name, {})[state.value] = count
        totals[state.value] += count
    return {"totals": totals, "queues": dict(sorted(by_queue.items()))}


@router.get("/ui/counts")
def counts(request: Request, session: Current) -> JSONResponse:
    """Jobs by state, overall and per queue: what the overview's numbers show."""
    web = web_state(request)
    body = _counts(web, session.principal.queue)
    body["event"] = web.app.reader.rollup_cursor(ROLLUP)
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


# -- overview ------------------------------------------------------------------------


@router.get("/")
def overview(request: Request, session: Current) -> HTMLResponse:
    web = web_state(request)
    app = web.app
    last_event = app.last_event_id()
    counted = _counts(web, session.principal.queue)
    now = datetime.now(UTC)
    hour_ago = now - timedelta(hours=1)
    first_minute = int(hour_ago.timestamp()) // 60 * 60 + 60
    completed = [0] * 60
    failed = [0] * 60
    for flow in app.reader.flows_since(first_minute):
        if session.principal.queue not in (None, flow.queue):
            continue
        slot = int(flow.minute - first_minute) // 60
        if 0 <= slot < 60:
            if flow.state is State.COMPLETED:
                completed[slot] += flow.entered
            elif flow.state is State.FAILED:
                failed[slot] += flow.entered
    done, lost = sum(completed), sum(failed)
    sample = app.reader.events_since(
        max(last_event - SAMPLE, 0), SAMPLE, EventFilter(queue=session.principal.queue)
    )
    return render(
        request,
        session,
        "overview.html",
        last_event=last_event,
        counts=counted,
        diagram=svg.lifecycle({State(s): n for s, n in counted["totals"].items()}),
        chart=svg.bars(
            [("completed", completed), ("failed", failed)],
            "jobs completed and failed per minute over the last hour",
        ),
        completed=done,
        failed=lost,
        failure_rate=None if done + lost == 0 else lost / (done + lost),
        times=present.times(sample, hour_ago),
        workers=len(app.live_workers(WORKERS_SEEN_WITHIN)),
        sample=SAMPLE,
    )


# -- jobs ----------------------------------------------------------------------------


@router.get("/jobs")
def jobs(
    request: Request,
    session: Current,
    state: str = "",
    queue: str = "",
    name: str = "",
    window: str = "",
    args: str = "",
    before: str = "",
) -> HTMLResponse:
    """Jobs newest first, filtered; ``before``: the next page starts below this id."""
    web = web_state(request)
    problem = None
    found: list[Job] = []
    queue = session.principal.queue or queue
    filters = {"state": state, "queue": queue, "name": name, "window": window, "args": args}
    below = _job_id(before) if before else None
    try:
        if before and below is None:
            raise InvalidOption(f"before must be a job id, not {before[:40]!r}")
        chosen = _state(state)
        since = None
        if window:
            if window not in WINDOWS:
                raise InvalidOption(f"unknown window {window!r}; choose one of {list(WINDOWS)}")
            since = datetime.now(UTC) - timedelta(seconds=WINDOWS[window])
        found = web.app.jobs(
            chosen,
            _queue(session, queue or None),
            name or None,
            PAGE + 1,
            below,
            created_after=since,
            args=args or None,
        )
    except InvalidOption as bad:
        problem = str(bad)
    more = len(found) > PAGE
    found = found[:PAGE]
    kept = {k: v for k, v in filters.items() if v}
    older = f"/jobs?{urlencode({**kept, 'before': found[-1].id})}" if more else None
    return render(
        request,
        session,
        "jobs.html",
        status=400 if problem else 200,
        jobs=found,
        filters=filters,
        problem=problem,
        older=older,
        newest=f"/jobs?{urlencode(kept)}" if below else None,
        windows=list(WINDOWS),
        bulk_ready=not (window or args),
    )


def _state(text: str) -> State | None:
    """The state a filter names (None: any); ``InvalidOption`` for another word."""
    if not text:
        return None
    try:
        return State(text)
    except ValueError:
        raise InvalidOption(
            f"unknown state {text!r}; states are {', '.join(s.value for s in State)}"
        ) from None


def _bulk_body(verb: str, state: str, queue: str, name: str, session: Session) -> BulkBody:
    chosen = [s for s in [_state(state)] if s is not None]
    return BulkBody.model_validate(
        {
            "verb": verb,
            "filter": BulkFilter(
                state=chosen, queue=_queue(session, queue or None), name=name or None
            ),
            "all": True,
        }
    )


@router.post("/jobs/bulk")
async def bulk(
    request: Request,
    session: Current,
    verb: Annotated[str, Form()],
    csrf: Annotated[str, Form()] = "",
    state: Annotated[str, Form()] = "",
    queue: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    apply: Annotated[str, Form()] = "",
) -> HTMLResponse:
    """A bulk verb on every job the filter matches: previewed, then (``apply``) started."""
    await check_post(request, session, "operate", csrf)
    web = web_state(request)
    if verb not in VERBS:
        problem = f"unknown verb {verb[:40]!r}; the verbs are {', '.join(VERBS)}"
        return render(request, session, "bulk.html", 400, problem=problem)
    try:
        body = _bulk_body(verb, state, queue, name, session)
    except InvalidOption as bad:
        return render(request, session, "bulk.html", 400, problem=str(bad))
    if body.filter.is_empty():
        return render(
            request,
            session,
            "bulk.html",
            400,
            problem="choose a state, queue or name first: a bulk action never takes every job",
        )
    filters = {"state": state, "queue": queue, "name": name}
    if not apply:
        return render(request, session, "bulk.html", shape=preview(web.app, body), filters=filters)
    started = begin(web, body, session.principal.name)
    return render(request, session, "bulk.html", shape=started, filters=filters)


@router.get("/jobs/bulk/{operation_id}")
def bulk_progress(request: Request, session: Current, operation_id: str) -> HTMLResponse:
    shape = progress(web_state(request), operation_id[:40])
    if shape is None:
        return render(request, session, "bulk.html", 404, problem="no such bulk operation")
    return render(request, session, "bulk.html", shape=shape, filters={})


# -- one job -------------------------------------------------------------------------


def _job_context(web: WebState, session: Session, job_id: int) -> dict[str, Any]:
    app = web.app
    job = app.get(job_id)
    if session.principal.queue not in (None, job.queue):
        raise JobNotFound(job_id)
    history = app.history(job_id)
    steps = app.reader.steps(job_id)
    verbs = [(verb, job.state in sources) for verb, (_, sources) in VERBS.items()]
    return {
        "job": job,
        "args": present.pretty(job.args),
        "result": None if job.result is None else present.pretty(job.result),
        "error": None if job.error is None else present.pretty(job.error),
        "timeline": present.timeline(history, datetime.now(UTC)),
        "steps": {
            k: (None if v is None else present.pretty(json.loads(v))) for k, v in steps.items()
        },
        "children": app.children(job_id),
        "dependencies": app.dependencies(job_id),
        "awakeables": app.awakeables(job_id),
        "verbs": verbs,
        "allowed_moves": JOBS.targets(job.state),
        "phase": present.phase(history),
        "last_event": history[-1].id if history else 0,
    }


def _job_id(text: str) -> int | None:
    """A job id from a path or a form (None: not one)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    number = int(text)
    return number if 1 <= number <= MAX_ID else None


@router.get("/jobs/{job_text}")
def job_page(request: Request, session: Current, job_text: str) -> HTMLResponse:
    job_id = _job_id(job_text)
    if job_id is None:
        return render(request, session, "missing.html", 404, what=f"job {job_text[:40]}")
    try:
        context = _job_context(web_state(request), session, job_id)
    except JobNotFound:
        return render(request, session, "missing.html", 404, what=f"job {job_id}")
    template = "job_live.html" if request.headers.get("hx-request") == "true" else "job.html"
    return render(request, session, template, **context)


@router.post("/jobs/{job_text}/{verb}")
async def job_verb(
    request: Request,
    session: Current,
    job_text: str,
    verb: str,
    csrf: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> HTMLResponse:
    """Apply ``verb`` as the session's token; the job's live part, with why when refused."""
    await check_post(request, session, "operate", csrf)
    web = web_state(request)
    job_id = _job_id(job_text)
    if verb not in VERBS or job_id is None:
        what = f"{verb[:40]} on job {job_text[:40]}"
        return render(request, session, "missing.html", 404, what=what)
    problem, status = None, 200
    try:
        job = web.app.get(job_id)
        if session.principal.queue not in (None, job.queue):
            raise JobNotFound(job_id)
        # No If-Match: the lifecycle table judges the job as it is now, and a
        # refusal says why (the page shows the state it is in by then).
        getattr(web.app, verb)(job_id, session.principal.name, reason=reason[:1000] or None)
    except JobNotFound:
        return render(request, session, "missing.html", 404, what=f"job {job_id}")
    except InvalidTransition as refused:
        problem, status = str(refused), 409
    context = _job_context(web, session, job_id)
    return render(request, session, "job_live.html", status, problem=problem, **context)


# -- queues, workers, awakeables -----------------------------------------------------


@router.get("/queues")
def queues(request: Request, session: Current, acted: str | None = None) -> HTMLResponse:
    """``acted``: the queue just paused or resumed, listed even when none of
    its jobs is live any more (the counts list only queues with live jobs and
    those rolled up, so a queue whose last job just ended would vanish)."""
    web = web_state(request)
    counted = _counts(web, session.principal.queue)
    paused = {q.queue for q in web.app.reader.queues() if q.paused}
    names = sorted(set(counted["queues"]) | paused | ({acted[:200]} if acted else set()))
    if session.principal.queue is not None:
        names = [n for n in names if n == session.principal.queue]
    return render(
        request,
        session,
        "queues.html",
        names=names,
        counts=counted["queues"],
        paused=paused,
        limits=web.app.limits(),
    )


@router.post("/queues/{name}/{action}")
async def queue_action(
    request: Request,
    session: Current,
    name: str,
    action: str,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    await check_post(request, session, "operate", csrf)
    if action not in ("pause", "resume") or session.principal.queue not in (None, name):
        return render(request, session, "missing.html", 404, what=f"{action} on queue {name}")
    app = web_state(request).app
    try:
        (app.pause_queue if action == "pause" else app.resume_queue)(name)
    except InvalidOption as bad:
        return render(request, session, "missing.html", 400, what=str(bad))
    return RedirectResponse(f"/queues?{urlencode({'acted': name})}", 303)


@router.get("/workers")
def workers(request: Request, session: Current) -> HTMLResponse:
    app = web_state(request).app
    alive = app.live_workers(WORKERS_SEEN_WITHIN)
    leases = {w.id: len(app.reader.claimed_by(w.id)) for w in alive}
    return render(
        request, session, "workers.html", workers=alive, leases=leases, now=app.clock.now()
    )


@router.get("/awakeables")
def awakeables(request: Request, session: Current) -> HTMLResponse:
    found = web_state(request).app.reader.awakeables_in_state(
        AwakeableState.PENDING, 200, session.principal.queue
    )
    return render(request, session, "awakeables.html", awakeables=found, problem=None)


@router.post("/awakeables/{awakeable_id}/{action}")
async def settle(
    request: Request,
    session: Current,
    awakeable_id: str,
    action: str,
    csrf: Annotated[str, Form()] = "",
    value: Annotated[str, Form()] = "null",
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Resolve with ``value`` (JSON) or reject with ``reason``."""
    await check_post(request, session, "resolve", csrf)
    app = web_state(request).app
    problem = None
    try:
        awakeable = app.reader.awakeable(awakeable_id[:200])
        if session.principal.queue not in (None, app.get(awakeable.job_id).queue):
            raise AwakeableNotFound(awakeable_id)
        if action == "resolve":
            try:
                answer = json.loads(value or "null")
            except (ValueError, RecursionError) as bad:
                raise InvalidOption(
                    f'the value must be JSON (such as true, 3 or "yes"): {bad}'
                ) from None
            app.resolve(awakeable.id, answer, actor=session.principal.name)
        elif action == "reject":
            if not reason.strip():
                raise InvalidOption("say why it is rejected: the job's handler gets the reason")
            app.reject(awakeable.id, reason.strip()[:1000], session.principal.name)
        else:
            raise InvalidOption(f"unknown action {action!r}; resolve or reject")
    except (AwakeableNotFound, SignalAlreadySettled, InvalidOption) as bad:
        problem = str(bad)
    except InstarError as bad:
        problem = str(bad)
    if problem is None:
        return RedirectResponse("/awakeables", 303)
    found = app.reader.awakeables_in_state(AwakeableState.PENDING, 200, session.principal.queue)
    return render(request, session, "awakeables.html", 409, awakeables=found, problem=problem)
