"""``instar demo``: a short tour of the job lifecycle with real worker processes.

The handlers below live on a module-level ``app`` so that worker subprocesses
can load them as ``instar.demo:app``; the demo itself enqueues through a
second App on the same database, then steers the workers from outside the way
an operator would: it cancels a running job, SIGKILLs a worker mid-job, pauses
a job that works in steps and resumes it, and answers a job waiting for a
signal. Everything the workers do (retries, timers, lease rescue, replaying
steps, waking parents and dependants) happens inside the worker processes; the
demo only watches, steers and prints.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

import instar
from instar.lifecycle import State, is_terminal
from instar.models import Event, Job

app = instar.App()
"""The demo's handlers; a worker started with ``--database`` points it at the demo's file."""

INGEST_LEASE = 2.0
"""Short, so that the job of the killed worker is rescued within seconds."""

DEADLINE = 45.0
"""Seconds after which the demo gives up: it normally takes about five."""

STATE_STYLES: dict[State, str] = {
    State.PENDING: "dim",
    State.SCHEDULED: "cyan",
    State.READY: "blue",
    State.RUNNING: "bold yellow",
    State.SUSPENDED: "magenta",
    State.BACKING_OFF: "dark_orange",
    State.PAUSED: "magenta",
    State.ORPHANED: "bold red",
    State.SERVING: "yellow",
    State.STOPPING: "yellow",
    State.COMPLETED: "green",
    State.FAILED: "red",
    State.CANCELLED: "grey50",
}


# -- the handlers ---------------------------------------------------------------


@app.job(name="resize_image", queue="images")
def resize_image(ctx: instar.Context, path: str, width: int) -> dict[str, Any]:
    """A plain success that reports progress at every stage."""
    stages = ["decode", "resize", "sharpen", "encode", "upload"]
    pause = 0.3 + (sum(map(ord, path)) % 5) * 0.06  # images differ a little in size
    for done, stage in enumerate(stages):
        ctx.progress(done, len(stages), f"{stage} {path}")
        time.sleep(pause)
    ctx.progress(len(stages), len(stages), "uploaded")
    return {"thumbnail": f"thumbs/{width}/{path}", "width": width}


@app.job(
    name="fetch_rates",
    retry=instar.Retry(max_attempts=4, initial_interval=0.3, factor=2.0, jitter=0.1),
)
def fetch_rates(ctx: instar.Context, currency: str) -> dict[str, float]:
    """Flaky: the first two attempts time out, the third succeeds."""
    if ctx.attempt < 3:
        raise ConnectionError(f"rates.example.com timed out (attempt {ctx.attempt})")
    return {currency: 1.08}


@app.job(name="charge_card")
def charge_card(order: str, cents: int) -> None:
    """Fails for good at once: no retry can fix a declined card."""
    raise instar.Fatal(f"card for order {order} declined ({cents / 100:.2f} EUR)")


@app.job(name="sync_inventory", retry=instar.Retry(max_attempts=2, initial_interval=0.3))
def sync_inventory(warehouse: str) -> None:
    """Fails for good after its retries: the error is retriable, the outage is not."""
    raise RuntimeError(f"warehouse {warehouse} API returned 503")


@app.job(name="send_reminder")
def send_reminder(ctx: instar.Context, user: str) -> str:
    """Enqueued with a delay: it waits as ``scheduled`` before it may run."""
    ctx.progress(1, 1, f"mailed {user}")
    return f"reminder sent to {user}"


@app.job(name="transcode_video", queue="video")
def transcode_video(ctx: instar.Context, path: str) -> str | None:
    """Long and cooperative: it checks ``ctx.cancelled`` between chunks."""
    chunks = 200
    for chunk in range(chunks):
        if ctx.cancelled:
            return None  # the worker records the job as cancelled
        if chunk % 5 == 0:
            ctx.progress(chunk, chunks, f"transcoding {path}")
        time.sleep(0.1)
    return f"{path}.mp4"


@app.job(name="ingest_batch", queue="ingest", lease=INGEST_LEASE)
def ingest_batch(ctx: instar.Context, batch: str) -> str:
    """Slow on its first attempt (its worker gets killed), quick on a re-run."""
    rows = 40
    if ctx.attempt == 1:
        for row in range(rows):
            ctx.progress(row, rows, f"loading {batch}")
            time.sleep(0.25)
    else:
        ctx.progress(rows, rows, f"{batch} loaded on attempt {ctx.attempt}")
    return f"{batch}: {rows} rows"


# -- durable handlers: steps and a pause, a signal, children, a dependency ---------

REPORT_PAGES = 8
"""Pages of the report export, about 0.3s each."""

PAUSE_AFTER_PAGE = 3
"""The demo asks to pause the export once it reports this page done; the export
pauses at its next checkpoint, usually the end of the page after."""

APPROVAL = {"by": "grace", "note": "goodwill"}
"""What the demo, playing the manager, answers the refund job's signal with."""

REGIONS = {"eu": 6, "us": 8, "apac": 4}
"""The catalog's children: one per region, pricing this many products each."""


def render_page(report: str, page: int) -> dict[str, Any]:
    """The slow part of an export, and a side effect worth doing once per page."""
    time.sleep(0.3)
    return {"page": page, "rows": 20 + (page * 7 + len(report)) % 11}


@app.job(name="export_report")
def export_report(ctx: instar.Context, report: str, pages: int) -> dict[str, Any]:
    """Works page by page: each page is a step (stored once done, replayed on a
    later run instead of being rendered again) followed by a checkpoint, where
    a pause request takes effect."""
    rendered = 0

    def render(page: int) -> dict[str, Any]:
        nonlocal rendered
        rendered += 1
        return render_page(report, page)

    resumed_after = int((ctx.checkpoint_data or {}).get("pages_done", 0))
    rows = 0
    for page in range(1, pages + 1):
        rows += ctx.step(f"page-{page}", render, page)["rows"]
        if page > resumed_after:
            ctx.checkpoint({"pages_done": page})  # a pause request takes effect here
            ctx.progress(page, pages, f"page {page}/{pages}")
    return {"pages": pages, "rows": rows, "replayed": pages - rendered}


@app.job(name="mail_report")
def mail_report(ctx: instar.Context, report: str) -> str:
    """Enqueued ``after`` the export: it stays pending until the export completes."""
    ctx.progress(1, 1, "mailed")
    return f"{report} mailed to the board"


@app.job(name="refund_order")
def refund_order(ctx: instar.Context, order: str, cents: int) -> str:
    """Needs a person's approval: suspended, holding no worker, until it is given."""
    amount = ctx.step("amount", lambda: f"{cents / 100:.2f} EUR")
    approval = ctx.await_signal("approval", timeout=60)
    return f"refunded {amount}, approved by {approval['by']}"


@app.job(name="price_region")
def price_region(ctx: instar.Context, region: str, products: int) -> int:
    """A child of build_catalog: prices one region's products."""
    for done in range(products):
        ctx.progress(done, products, f"pricing {region}")
        time.sleep(0.12)
    ctx.progress(products, products, f"{region} priced")
    return products


@app.job(name="build_catalog")
def build_catalog(ctx: instar.Context, regions: dict[str, int]) -> dict[str, Any]:
    """A parent: spawns a child per region and joins them, suspended meanwhile."""
    children = [
        ctx.spawn(price_region, region=region, products=products)
        for region, products in regions.items()
    ]
    priced = ctx.join(children)
    return {"regions": len(children), "prices": sum(priced)}


# -- worker processes ------------------------------------------------------------


@dataclass
class WorkerProcess:
    """One ``instar worker`` subprocess, with a short label for the printout."""

    label: str
    queues: tuple[str, ...]
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    killed: bool = False

    @property
    def pid(self) -> int:
        """Worker ids carry the pid, so events can be matched to A, B and C."""
        return self.proc.pid


def worker_command() -> list[str]:
    """The CLI of the same interpreter, so that the demo runs without PATH set up."""
    return [sys.executable, "-m", "instar.cli.main", "worker", "--app", "instar.demo:app"]


def start_worker(
    label: str, queues: tuple[str, ...], database: str, folder: Path, concurrency: int
) -> WorkerProcess:
    """Start a worker whose log goes to a file, so it never scribbles over the live view."""
    log = (folder / f"worker-{label}.log").open("ab")
    command = [*worker_command(), "--database", database, "--concurrency", str(concurrency)]
    for queue in queues:
        command += ["--queue", queue]
    command += ["--shutdown-grace", "2"]
    env = {**os.environ, "INSTAR_DATABASE": database}
    try:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    except BaseException:
        log.close()
        raise
    return WorkerProcess(label, queues, proc, log)


def stop_workers(workers: list[WorkerProcess], timeout: float = 10.0) -> None:
    """SIGTERM every live worker, then wait; kill any that outstays ``timeout``."""
    for worker in workers:
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for worker in workers:
        try:
            worker.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait()
        worker.log.close()


@contextmanager
def worker_pool() -> Iterator[list[WorkerProcess]]:
    """Whatever happens in the block, no worker outlives it."""
    workers: list[WorkerProcess] = []
    try:
        yield workers
    finally:
        stop_workers(workers)


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """A SIGTERM to the demo must stop its workers too, as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the tour --------------------------------------------------------------------


@dataclass
class Plan:
    """The jobs the demo enqueued, by the role each plays in the story."""

    images: list[int]
    flaky: int
    declined: int
    exhausted: int
    delayed: int
    cancelled: int
    orphaned: int
    paused: int
    dependent: int
    signalled: int
    parent: int

    @property
    def all(self) -> list[int]:
        """Every job the demo enqueued (the children come later, from the parent)."""
        return [
            *self.images,
            self.flaky,
            self.declined,
            self.exhausted,
            self.delayed,
            self.cancelled,
            self.orphaned,
            self.paused,
            self.dependent,
            self.signalled,
            self.parent,
        ]


def enqueue_jobs(client: instar.App) -> Plan:
    """A realistic mix: successes, a flaky call, two failures, a timer, a long and a fragile job."""
    # The long video goes first (priority) so that it is running when the demo cancels it.
    video = client.enqueue("transcode_video", {"path": "keynote.mov"}, priority=10, actor="demo")
    ingest = client.enqueue("ingest_batch", {"batch": "orders-2024-06"}, actor="demo")
    images = client.enqueue_many(
        "resize_image",
        [{"path": f"photo-{n}.jpg", "width": 320} for n in range(1, 7)],
        actor="demo",
    )
    flaky = client.enqueue("fetch_rates", {"currency": "EUR"}, actor="demo")
    declined = client.enqueue("charge_card", {"order": "A-1041", "cents": 4999}, actor="demo")
    exhausted = client.enqueue("sync_inventory", {"warehouse": "north"}, actor="demo")
    delayed = client.enqueue("send_reminder", {"user": "ada"}, delay=3, actor="demo")
    report = "q2-sales"
    export = client.enqueue(
        "export_report", {"report": report, "pages": REPORT_PAGES}, actor="demo"
    )
    mail = client.enqueue("mail_report", {"report": report}, after=[export], actor="demo")
    refund = client.enqueue("refund_order", {"order": "B-2002", "cents": 12900}, actor="demo")
    catalog = client.enqueue("build_catalog", {"regions": REGIONS}, actor="demo")
    return Plan(
        images=[job.id for job in images],
        flaky=flaky.id,
        declined=declined.id,
        exhausted=exhausted.id,
        delayed=delayed.id,
        cancelled=video.id,
        orphaned=ingest.id,
        paused=export.id,
        dependent=mail.id,
        signalled=refund.id,
        parent=catalog.id,
    )


@dataclass
class Tour:
    """The state of one demo run: what was started, seen and done so far."""

    client: instar.App
    database: str
    folder: Path
    console: Console
    plan: Plan
    workers: list[WorkerProcess]
    started: float = field(default_factory=time.time)
    jobs: dict[int, Job] = field(default_factory=dict)
    running_since: dict[int, float] = field(default_factory=dict)
    narrated: dict[int, int] = field(default_factory=dict)
    children: list[int] = field(default_factory=list)
    cancel_sent: bool = False
    pause_sent: bool = False
    paused_seen: float | None = None
    resumed: bool = False
    suspended_seen: float | None = None
    resolved: bool = False

    @property
    def tracked(self) -> list[int]:
        """Every job the demo watches: the ones it enqueued and their children."""
        return [*self.plan.all, *self.children]

    # -- narration --------------------------------------------------------------

    def elapsed(self, at: float | None = None) -> float:
        """Seconds since the demo began (of ``at``, an epoch time, if given)."""
        return (time.time() if at is None else at) - self.started

    def say(self, message: str, style: str = "") -> None:
        """One line of the story, above the live view."""
        line = Text(f"+{self.elapsed():5.2f}s  ", style="dim")
        line.append(Text.from_markup(message, style=style))
        self.console.print(line)

    def worker_of(self, worker_id: str | None) -> WorkerProcess | None:
        """The demo's worker whose pid the worker id (``host:pid:suffix``) carries."""
        parts = (worker_id or "").rsplit(":", 2)
        for worker in self.workers:
            if len(parts) == 3 and parts[1] == str(worker.pid):
                return worker
        return None

    def worker_label(self, worker_id: str | None) -> str:
        """``A`` for the demo's worker A; the raw id for any other worker."""
        worker = self.worker_of(worker_id)
        return worker.label if worker is not None else worker_id or ""

    def narrate_events(self, job: Job) -> None:
        """Tell the state changes of a job since the last ones told, from its timeline."""
        last = self.narrated.get(job.id, 0)
        for event in self.client.history(job.id):
            if event.id <= last or event.from_state == event.to_state:
                continue
            self.narrated[job.id] = event.id
            if event.trigger == "enqueued" and event.to_state is State.READY:
                continue  # the opening line said so
            if job.name in QUIET_JOBS and event.to_state is not State.FAILED:
                continue  # the live table shows these; the story keeps to the twists
            self.say(f"#{job.id} [bold]{job.name}[/]: {describe(event, self.worker_label)}")

    # -- the steps of the story ---------------------------------------------------

    def start(self, label: str, queues: tuple[str, ...], concurrency: int) -> WorkerProcess:
        worker = start_worker(label, queues, self.database, self.folder, concurrency)
        self.workers.append(worker)
        self.say(
            f"started worker [bold]{label}[/] (pid {worker.pid}) on queue(s) {', '.join(queues)}",
            style="cyan",
        )
        return worker

    def refresh(self) -> None:
        """Re-read every demo job and tell what changed."""
        self.find_children()
        now = time.time()
        for job_id in self.tracked:
            job = self.client.get(job_id)
            before = self.jobs.get(job_id)
            self.jobs[job_id] = job
            if job.state is State.RUNNING and (
                before is None or before.state is not State.RUNNING or before.worker != job.worker
            ):
                self.running_since[job_id] = now
            if before is None or (before.state, before.attempt) != (job.state, job.attempt):
                self.narrate_events(job)

    def find_children(self) -> None:
        """The parent creates its children when it runs: watch them from then on."""
        parent = self.jobs.get(self.plan.parent)
        if len(self.children) == len(REGIONS) or parent is None:
            return
        found = [c.id for c in self.client.children(parent.id) if c.id not in self.children]
        if found:
            self.children += found
            names = ", ".join(f"#{i}" for i in found)
            self.say(
                f"#{parent.id} [bold]{parent.name}[/] spawned {names} price_region "
                "with ctx.spawn and waits for them in ctx.join"
            )

    def ran_for(self, job_id: int) -> float:
        """Seconds the job has been running, as far as the demo has seen."""
        job = self.jobs.get(job_id)
        if job is None or job.state is not State.RUNNING:
            return 0.0
        return time.time() - self.running_since.get(job_id, time.time())

    def check_workers(self) -> None:
        """A worker that dies on its own would leave the story hanging: stop at once."""
        for worker in self.workers:
            code = worker.proc.poll()
            if code is not None and not worker.killed:
                raise DemoError(
                    f"worker {worker.label} exited with code {code}; "
                    f"see {self.folder / f'worker-{worker.label}.log'}"
                )

    def done(self) -> bool:
        """Every demo job has been seen and has reached a terminal state."""
        jobs = [self.jobs.get(job_id) for job_id in self.tracked]
        return all(job is not None and is_terminal(job.state) for job in jobs)

    def run(self, live: Live) -> None:
        """Drive the story: start workers, cancel, kill, until every job has ended."""
        self.start("A", ("default", "images", "video"), concurrency=16)
        fragile: WorkerProcess | None = None
        deadline = time.monotonic() + DEADLINE
        while True:
            self.refresh()
            self.check_workers()
            live.update(self.render())
            if self.done():
                return
            if time.monotonic() > deadline:
                raise DemoError(f"the jobs did not all finish within {DEADLINE:.0f}s")
            if fragile is None and any(j.worker for j in self.jobs.values()):
                # A is up and leads maintenance, so it will rescue B's job when B dies.
                fragile = self.start("B", ("ingest",), concurrency=2)
            if not self.cancel_sent and self.ran_for(self.plan.cancelled) >= 2.5:
                self.client.cancel(self.plan.cancelled, actor="demo")
                self.cancel_sent = True
                self.say(
                    f"asked to cancel #{self.plan.cancelled} while it runs; "
                    "its worker tells the handler through ctx.cancelled",
                    style="cyan",
                )
            ingest = self.jobs.get(self.plan.orphaned)
            if (
                fragile is not None
                and not fragile.killed
                and ingest is not None
                and self.worker_label(ingest.worker) == fragile.label
                and self.ran_for(self.plan.orphaned) >= 2.0
            ):
                fragile.proc.send_signal(signal.SIGKILL)
                fragile.proc.wait()
                fragile.killed = True
                self.say(
                    f"[bold]SIGKILL[/] worker {fragile.label} (pid {fragile.pid}) in the middle of "
                    f"#{ingest.id}; nobody renews its {INGEST_LEASE:g}s lease now",
                    style="red",
                )
                self.start("C", ("ingest",), concurrency=2)
            self.steer_pause()
            self.steer_signal()
            time.sleep(0.1)

    def steer_pause(self) -> None:
        """Pause the export while it runs; resume it a second after it has paused."""
        export = self.jobs.get(self.plan.paused)
        if export is None:
            return
        done = export.progress.current if export.progress is not None else 0
        if not self.pause_sent and export.state is State.RUNNING and done >= PAUSE_AFTER_PAGE:
            self.client.pause(export.id, actor="demo")
            self.pause_sent = True
            self.say(
                f"asked to pause #{export.id} at page {done:g}/{REPORT_PAGES}; "
                "it pauses at its next checkpoint",
                style="cyan",
            )
        if export.state is State.PAUSED and self.paused_seen is None:
            self.paused_seen = time.monotonic()
        if (
            not self.resumed
            and self.paused_seen is not None
            and time.monotonic() - self.paused_seen >= 1.0
        ):
            self.client.resume(export.id, actor="demo")
            self.resumed = True
            self.say(
                f"resumed #{export.id}; its stored steps are replayed, not run again",
                style="cyan",
            )

    def steer_signal(self) -> None:
        """A second after the refund is suspended on its signal, approve it from outside."""
        refund = self.jobs.get(self.plan.signalled)
        if refund is None or self.resolved:
            return
        if refund.state is State.SUSPENDED and self.suspended_seen is None:
            self.suspended_seen = time.monotonic()
        if self.suspended_seen is None or time.monotonic() - self.suspended_seen < 1.0:
            return
        pending = [a for a in self.client.awakeables(refund.id) if a.state == "pending"]
        if not pending:
            raise DemoError(f"#{refund.id} is suspended but awaits no signal")
        self.client.resolve(pending[0].id, APPROVAL, actor="demo")
        self.resolved = True
        self.say(
            f"resolved signal '{escape(pending[0].name)}' of #{refund.id} from outside "
            f"with {escape(repr(APPROVAL))}",
            style="cyan",
        )

    # -- rendering ----------------------------------------------------------------

    def table_order(self) -> list[int]:
        """The demo's jobs by id, each parent followed by its children."""
        order: list[int] = []
        for job_id in sorted(self.plan.all):
            order.append(job_id)
            if job_id == self.plan.parent:
                order += sorted(self.children)
        return order

    def render(self) -> RenderableType:
        """The live view: counts by state, every demo job, the workers."""
        counts = self.client.counts()
        summary = Text(f"+{self.elapsed():5.2f}s  ", style="dim")
        for state in State:
            if counts.get(state):
                summary.append(f"{state.value} {counts[state]}  ", style=STATE_STYLES[state])
        wide = self.console.width >= 100  # room for the queue column
        table = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
        columns = ["job", "name", *(["queue"] if wide else []), "state", "try", "progress", ""]
        for column in columns:
            table.add_column(column, no_wrap=True)
        order = self.table_order()
        id_width = max(len(f"#{job_id}") for job_id in order) if order else 3
        # The other columns at their widest, and the gaps between columns.
        used = 67 + id_width + (9 if wide else 0)
        message_width = max(8, min(30, self.console.width - used))
        table.add_column("", no_wrap=True, overflow="ellipsis", max_width=message_width)
        table.add_column("worker", no_wrap=True)
        for job_id in order:
            job = self.jobs.get(job_id)
            if job is None:
                continue
            progress: RenderableType = ""
            percent = ""
            message = ""
            if job.progress is not None and job.progress.total:
                fraction = min(1.0, job.progress.current / job.progress.total)
                progress = ProgressBar(total=1.0, completed=fraction, width=10)
                percent = f"{fraction:.0%}"
                message = job.progress.message or ""
            table.add_row(
                f"#{job.id}",
                f"└ {job.name}" if job.parent_id is not None else job.name,
                *([job.queue] if wide else []),
                Text(job.state.value, style=STATE_STYLES[job.state]),
                str(job.attempt),
                progress,
                Text(percent, justify="right"),
                message,
                worker_cell(self.worker_of(job.worker), job),
            )
        workers = Text("workers: ", style="dim")
        for worker in self.workers:
            status = "killed" if worker.killed else "running"
            workers.append(f"{worker.label} pid {worker.pid} {status}  ")
        return Group(summary, table, workers)


def worker_cell(worker: WorkerProcess | None, job: Job) -> Text:
    """The job's worker: none while it waits paused or suspended; flagged when the
    demo killed it and the job does not know yet."""
    if job.state in (State.PAUSED, State.SUSPENDED):
        return Text("freed", style="dim")  # it holds no worker while it waits
    if worker is None:
        return Text(job.worker or "")
    if worker.killed and job.state is State.RUNNING:
        return Text(f"{worker.label} (killed)", style="bold red")
    return Text(worker.label)


class DemoError(Exception):
    """The tour could not go as planned (a worker died, jobs never finished)."""


QUIET_JOBS = frozenset({"resize_image", "price_region"})
"""Jobs whose ordinary moves the live table shows well enough: not narrated."""

MAINTENANCE_TRIGGERS = frozenset({"due", "lease-expired", "requeued", "too-many-losses"})
"""Moves made by the maintenance pass inside some worker, not by the job's own worker."""


def mover(event: Event, label: Callable[[str | None], str]) -> str:
    """Who made a move: the actor who asked, maintenance, or the job's worker."""
    if event.actor:
        return event.actor
    if event.trigger in MAINTENANCE_TRIGGERS:
        return "maintenance"
    return f"worker {label(event.worker)}" if event.worker else ""


def explain(event: Event, label: Callable[[str | None], str]) -> str:
    """The interesting part of an event's detail, in a few words (plain text)."""
    detail = event.detail
    if event.trigger == "lease-expired":
        return f"worker {label(event.worker)} stopped renewing its lease"
    if event.trigger == "paused" and event.from_state is State.RUNNING:
        return "at a checkpoint, worker freed"
    if not isinstance(detail, dict):
        return "" if detail is None else str(detail)
    if event.trigger == "step" and "step" in detail:
        return str(detail["step"])
    if "join" in detail:
        return "joins " + ", ".join(f"#{child}" for child in detail["join"])
    if "signal" in detail:
        verb = "awaits" if event.to_state is State.SUSPENDED else "got"
        return f"{verb} signal '{detail['signal']}'"
    if "current" in detail:
        total = detail.get("total")
        return f"{detail['current']}/{total} {detail.get('message') or ''}".strip()
    words = f"{detail.get('type', 'error')}: {detail['message']}" if "message" in detail else ""
    if "next_retry_at" in detail:
        wait = float(detail["next_retry_at"]) - event.at.timestamp()
        words += f"; retry in {wait:.1f}s"
    return words


def describe(event: Event, label: Callable[[str | None], str]) -> str:
    """One move in words (rich markup): from, to, trigger, who, why."""
    source = "created" if event.from_state is None else event.from_state.value
    style = STATE_STYLES[event.to_state]
    words = f"{source} → [{style}]{event.to_state.value}[/] ({event.trigger}"
    who = mover(event, label)
    words += f", {escape(who)})" if who else ")"
    why = explain(event, label)
    return f"{words}: {escape(why)}" if why else words


def outcome(job: Job) -> str:
    """What a finished job left behind: its result or its error."""
    if job.state is State.COMPLETED:
        return f"result {job.result!r}"
    if job.error is not None:
        return f"{job.error.get('type')}: {job.error.get('message')}"
    return ""


def final_table(tour: Tour) -> Table:
    """Every demo job, grouped by the state it ended in."""
    table = Table(title="Jobs by final state", title_justify="left", header_style="bold")
    for column in ("state", "job", "name", "attempts", "outcome"):
        table.add_column(column)
    order = list(State)
    jobs = sorted(tour.jobs.values(), key=lambda j: (order.index(j.state), j.id))
    for job in jobs:
        table.add_row(
            Text(job.state.value, style=STATE_STYLES[job.state]),
            f"#{job.id}",
            job.name,
            f"{job.attempt}/{job.max_attempts}",
            outcome(job),
        )
    return table


def timeline_table(tour: Tour, job: Job, events: list[Event], why: str) -> Table:
    """A job's timeline, with times relative to the start of the demo."""
    table = Table(
        title=f"Timeline of #{job.id} {job.name} ({why})",
        title_justify="left",
        header_style="bold",
    )
    for column in ("event", "at", "from", "to", "trigger", "try", "by", "detail"):
        table.add_column(column)
    for event in events:
        is_note = event.from_state == event.to_state
        table.add_row(
            str(event.id),
            f"+{tour.elapsed(event.at.timestamp()):.2f}s",
            "" if event.from_state is None else event.from_state.value,
            Text(event.to_state.value, style="dim" if is_note else STATE_STYLES[event.to_state]),
            event.trigger,
            str(event.attempt),
            mover(event, tour.worker_label),
            explain(event, tour.worker_label),
            style="dim" if is_note else None,
        )
    return table


def checks(tour: Tour) -> list[tuple[bool, str]]:
    """What the demo promised to show, each checked against the database."""
    plan, jobs, client = tour.plan, tour.jobs, tour.client

    def moves(job_id: int) -> list[State]:
        return [e.to_state for e in client.history(job_id) if e.from_state != e.to_state]

    flaky = jobs[plan.flaky]
    orphan_moves = moves(plan.orphaned)
    orphan_workers = {
        e.worker for e in client.history(plan.orphaned) if e.to_state is State.RUNNING
    }
    delayed_events = client.history(plan.delayed)
    created = delayed_events[0].at.timestamp()
    first_run = next((e.at.timestamp() for e in delayed_events if e.to_state is State.RUNNING), 0.0)
    waited = first_run - created
    return [
        (
            all(jobs[i].state is State.COMPLETED for i in plan.images),
            f"{len(plan.images)} images resized, with progress on the way",
        ),
        (
            flaky.state is State.COMPLETED
            and flaky.attempt == 3
            and moves(plan.flaky).count(State.BACKING_OFF) == 2,
            f"#{plan.flaky} fetch_rates backed off twice and completed on attempt 3",
        ),
        (
            jobs[plan.declined].state is State.FAILED and jobs[plan.declined].attempt == 1,
            f"#{plan.declined} charge_card raised Fatal and failed without a retry",
        ),
        (
            jobs[plan.exhausted].state is State.FAILED and jobs[plan.exhausted].attempt == 2,
            f"#{plan.exhausted} sync_inventory failed once its 2 attempts were spent",
        ),
        (
            jobs[plan.delayed].state is State.COMPLETED and waited >= 2.9,
            f"#{plan.delayed} send_reminder waited as scheduled and ran {waited:.1f}s later",
        ),
        (
            jobs[plan.cancelled].state is State.CANCELLED
            and State.RUNNING in moves(plan.cancelled),
            f"#{plan.cancelled} transcode_video was cancelled while running",
        ),
        (
            jobs[plan.orphaned].state is State.COMPLETED
            and State.ORPHANED in orphan_moves
            and len(orphan_workers) == 2,
            f"#{plan.orphaned} ingest_batch was orphaned when its worker died, "
            "re-queued and completed by another worker",
        ),
        pause_check(tour),
        dependency_check(tour),
        signal_check(tour),
        children_check(tour),
    ]


def moves_of(events: list[Event]) -> list[State]:
    """The states a timeline went through, notes left out."""
    return [e.to_state for e in events if e.from_state != e.to_state]


def is_step(event: Event) -> bool:
    """A ``step`` note: a step's function ran and its result was stored."""
    return event.trigger == "step" and isinstance(event.detail, dict)


def pause_check(tour: Tour) -> tuple[bool, str]:
    """The export paused while running, resumed, completed, and ran every step once."""
    export = tour.jobs[tour.plan.paused]
    events = tour.client.history(export.id)
    paused = next((e for e in events if e.trigger == "paused"), None)
    resumed = next((e for e in events if e.trigger == "resumed"), None)
    steps = [(e.id, str(e.detail.get("step"))) for e in events if is_step(e)]
    ran = [name for _, name in steps]
    before = [name for event_id, name in steps if paused is not None and event_id < paused.id]
    replayed = export.result.get("replayed") if isinstance(export.result, dict) else None
    ok = (
        export.state is State.COMPLETED
        and paused is not None
        and resumed is not None
        and paused.from_state is State.RUNNING
        and moves_of(events)[-4:] == [State.PAUSED, State.READY, State.RUNNING, State.COMPLETED]
        and sorted(ran) == sorted(f"page-{n}" for n in range(1, REPORT_PAGES + 1))
        and 0 < len(before) < REPORT_PAGES
        and replayed == len(before)
    )
    gap = resumed.at.timestamp() - paused.at.timestamp() if paused and resumed else 0.0
    return ok, (
        f"#{export.id} export_report paused after page {len(before)}/{REPORT_PAGES} and "
        f"resumed {gap:.1f}s later; each of its {len(ran)} steps ran once "
        f"({replayed} replayed from the database)"
    )


def dependency_check(tour: Tour) -> tuple[bool, str]:
    """The mail waited as pending until the export completed, then ran."""
    mail = tour.jobs[tour.plan.dependent]
    events = tour.client.history(mail.id)
    export_done = next(
        (e for e in tour.client.history(tour.plan.paused) if e.to_state is State.COMPLETED), None
    )
    started = next((e for e in events if e.to_state is State.READY), None)
    ok = (
        mail.state is State.COMPLETED
        and moves_of(events)[:2] == [State.PENDING, State.READY]
        and export_done is not None
        and started is not None
        and started.id > export_done.id
    )
    return ok, (
        f"#{mail.id} mail_report stayed pending until #{tour.plan.paused} completed, then ran"
    )


def signal_check(tour: Tour) -> tuple[bool, str]:
    """The refund waited suspended for its signal and completed with the value sent."""
    refund = tour.jobs[tour.plan.signalled]
    awakeables = tour.client.awakeables(refund.id)
    ok = (
        refund.state is State.COMPLETED
        and moves_of(tour.client.history(refund.id))[-5:]
        == [State.RUNNING, State.SUSPENDED, State.READY, State.RUNNING, State.COMPLETED]
        and [(a.name, a.state, a.value) for a in awakeables] == [("approval", "resolved", APPROVAL)]
        and isinstance(refund.result, str)
        and APPROVAL["by"] in refund.result
    )
    return ok, (
        f"#{refund.id} refund_order was suspended on signal 'approval', "
        "resolved from outside and completed with its value"
    )


def children_check(tour: Tour) -> tuple[bool, str]:
    """The parent spawned its children, joined them suspended, and summed their results."""
    parent = tour.jobs[tour.plan.parent]
    children = tour.client.children(parent.id)
    ok = (
        parent.state is State.COMPLETED
        and State.SUSPENDED in moves_of(tour.client.history(parent.id))
        and len(children) == len(REGIONS)
        and all(c.state is State.COMPLETED for c in children)
        and parent.result == {"regions": len(REGIONS), "prices": sum(c.result for c in children)}
    )
    return ok, (
        f"#{parent.id} build_catalog spawned {len(children)} children, waited suspended "
        "in ctx.join and completed with their combined result"
    )


def stopped_cleanly(workers: list[WorkerProcess]) -> tuple[bool, str]:
    """SIGTERM is the graceful stop: every worker the demo did not kill exits with 0."""
    spared = [w for w in workers if not w.killed]
    ok = all(w.proc.returncode == 0 for w in spared)
    codes = ", ".join(f"{w.label} {w.proc.returncode}" for w in spared)
    return ok, f"workers stopped cleanly on SIGTERM (exit codes: {codes})"


def run_demo(database: str | None, console: Console) -> int:
    """Run the tour; return 0 when every job ended as the story says, else 1."""
    folder = Path(tempfile.mkdtemp(prefix="instar-demo-"))
    url = database or f"sqlite:///{folder / 'demo.db'}"
    console.print(f"[bold]Instar demo[/] on {escape(url)}  (worker logs in {escape(str(folder))})")
    with interrupt_on_sigterm(), instar.App(url) as client, worker_pool() as workers:
        client.registry.update(app.registry)
        started = time.time()
        plan = enqueue_jobs(client)
        tour = Tour(client, url, folder, console, plan, workers, started=started)
        tour.say(
            f"enqueued {len(plan.all)} jobs: 6 images, a flaky call, 2 doomed jobs, "
            "a reminder due in 3s, a long video, a fragile ingest, a report export "
            "to pause, a mail to send after it, a refund that needs approval and a "
            "catalog built by children"
        )
        try:
            with Live(
                tour.render(), console=console, refresh_per_second=10, transient=True
            ) as live:
                tour.run(live)
        except DemoError as error:
            console.print(f"[bold red]demo failed:[/] {error}")
            return 1
        except KeyboardInterrupt:
            console.print("[yellow]interrupted; stopping the workers[/]")
            return 130
        stop_workers(workers)
        tour.say("every job has ended; workers stopped with SIGTERM")
        console.print()
        console.print(final_table(tour))
        orphan = tour.jobs[plan.orphaned]
        console.print()
        console.print(
            timeline_table(tour, orphan, client.history(orphan.id), "its worker was killed")
        )
        console.print()
        export = tour.jobs[plan.paused]
        steps_and_moves = [
            e for e in client.history(export.id) if e.from_state != e.to_state or is_step(e)
        ]
        console.print(
            timeline_table(tour, export, steps_and_moves, "paused and resumed; its moves and steps")
        )
        console.print()
        results = [*checks(tour), stopped_cleanly(workers)]
        for ok, text in results:
            console.print(f"{'[green]✓[/]' if ok else '[red]✗[/]'} {text}")
        console.print(
            f"\nExplore it: [bold]instar jobs --database {escape(url)}[/]  ·  "
            f"[bold]instar show {export.id} --database {escape(url)}[/]"
        )
        console.print(f"Took {tour.elapsed():.1f}s.")
        return 0 if all(ok for ok, _ in results) else 1
