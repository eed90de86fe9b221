"""The tour itself: what the demo enqueues, how it steers the workers, what it tells.

The demo enqueues through its own App on the demo's database, then steers the
workers from outside the way an operator would: it cancels a running job,
SIGKILLs a worker mid-job, pauses a job that works in steps and resumes it,
and answers a job waiting for a signal. It also places two orders, instances
of a durable machine: one is paid and shipped, and its packing state enqueues
a job whose result comes back as the order's next event; the other is never
paid and its payment timer cancels it. Everything the workers do (retries,
timers, lease rescue, replaying steps, waking parents and dependants,
delivering a job's reply, firing a machine's timer) happens inside the worker
processes; the story only watches, steers and narrates.
"""

from __future__ import annotations

import json
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

import instar
from instar.demo.handlers import INGEST_LEASE, ORDER, PAYMENT_WINDOW, app
from instar.demo.live import final_table, live_view, order_history_table, timeline_table
from instar.demo.processes import (
    WorkerProcess,
    interrupt_on_sigterm,
    start_worker,
    stop_workers,
    worker_of,
    worker_pool,
)
from instar.display import describe, is_note, is_step
from instar.lifecycle import State, is_terminal
from instar.machines import HistoryEntry, Instance
from instar.models import Job
from instar.store.urls import redact

DEADLINE = 45.0
"""Seconds after which the demo gives up: it normally takes about five."""

REPORT_PAGES = 8
"""Pages of the report export, about 0.3s each."""

PAUSE_AFTER_PAGE = 3
"""The demo asks to pause the export once it reports this page done; the export
pauses at its next checkpoint, usually the end of the page after."""

APPROVAL = {"by": "grace", "note": "goodwill"}
"""What the demo, playing the manager, answers the refund job's signal with."""

REGIONS = {"eu": 6, "us": 8, "apac": 4}
"""The catalog's children: one per region, pricing this many products each."""

ORDERS = {"A-1001": 120, "A-1002": 45}
"""The orders the demo places, with their totals: the first is paid and
shipped, the second never paid."""

SHIPPED, UNPAID = ORDERS
"""Their keys, by the part each plays."""

UNDERPAID = 80
"""What the demo first pays for the shipped order: short of its total, refused."""

QUIET_JOBS = frozenset({"resize_image", "price_region"})
"""Jobs whose ordinary moves the live table shows well enough: not narrated."""


class DemoError(Exception):
    """The tour could not go as planned (a worker died, jobs never finished)."""


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
    orders: dict[str, Instance] = field(default_factory=dict)
    """The orders placed so far, as last read."""
    order_seq: dict[str, int] = field(default_factory=dict)
    """The last history entry told, by order."""
    order_jobs: list[int] = field(default_factory=list)
    """Jobs the orders' actions enqueued."""

    @property
    def tracked(self) -> list[int]:
        """Every job the demo watches: the ones it enqueued, their children, and
        the jobs the orders enqueued."""
        return [*self.plan.all, *self.children, *self.order_jobs]

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
        return worker_of(self.workers, worker_id)

    def worker_label(self, worker_id: str | None) -> str:
        """``A`` for the demo's worker A; the raw id for any other worker."""
        worker = self.worker_of(worker_id)
        return worker.label if worker is not None else worker_id or ""

    def narrate_events(self, job: Job) -> None:
        """Tell the state changes of a job since the last ones told, from its timeline."""
        last = self.narrated.get(job.id, 0)
        for event in self.client.history(job.id):
            if event.id <= last or is_note(event):
                continue
            self.narrated[job.id] = event.id
            if event.trigger == "enqueued" and event.to_state is State.READY:
                continue  # the opening line said so
            if job.name in QUIET_JOBS and event.to_state is not State.FAILED:
                continue  # the live table shows these; the story keeps to the twists
            self.say(f"#{job.id} [bold]{job.name}[/]: {describe(event, self.worker_label)}")

    def narrate_order(self, key: str) -> None:
        """Tell the moves of an order since the last ones told, from its history."""
        last = self.order_seq.get(key, 0)
        for entry in self.client.machines.history(ORDER.name, key, since_seq=last):
            self.order_seq[key] = entry.seq
            if entry.kind == "created":
                continue  # the opening line said so
            self.say(f"order [bold]{key}[/]: {escape(order_move(entry))}")

    # -- the steps of the story ---------------------------------------------------

    def open_orders(self) -> None:
        """Register the order machine and place the orders: pay the first (short
        of its total first, refused) and ship it; leave the second unpaid."""
        machines = self.client.machines
        machines.register(ORDER)
        for key, total in ORDERS.items():
            self.orders[key] = machines.create(
                ORDER.name, key, {"order_id": key, "total": total}, actor="demo"
            )
        self.say(
            f"placed orders {SHIPPED} ({ORDERS[SHIPPED]} EUR) and {UNPAID} ({ORDERS[UNPAID]} EUR), "
            f"instances of the durable machine '{ORDER.name}'; an order unpaid after "
            f"{PAYMENT_WINDOW} is cancelled by its timer",
            style="cyan",
        )
        short = machines.send(ORDER.name, SHIPPED, "pay", {"amount": UNDERPAID}, actor="demo")
        self.say(
            f"order [bold]{SHIPPED}[/]: pay {UNDERPAID} refused ({short.reason}: "
            f"{escape(short.detail or '')})"
        )
        machines.send(ORDER.name, SHIPPED, "pay", {"amount": ORDERS[SHIPPED]}, actor="demo")
        machines.send(ORDER.name, SHIPPED, "ship", actor="demo")
        self.narrate_order(SHIPPED)
        self.order_jobs = [job.id for job in self.client.jobs(name="reserve_stock")]
        for job_id in self.order_jobs:
            self.say(
                f"#{job_id} [bold]reserve_stock[/] enqueued by order {SHIPPED}'s packing state, "
                "in the same transaction; its result will come back as stock_reserved",
                style="cyan",
            )

    def refresh_orders(self) -> None:
        """Re-read the orders and tell their new moves; a reply they refused
        leaves the story hanging: stop at once, saying why."""
        for key in self.orders:
            order = self.client.machines.get(ORDER.name, key)
            if order.seq != self.orders[key].seq:
                self.narrate_order(key)
            self.orders[key] = order
        if SHIPPED not in self.orders:
            return
        refused = self.client.machines.refusals(ORDER.name, SHIPPED)
        stuck = [r for r in refused if r.event == "stock_reserved"]
        if stuck:
            raise DemoError(
                f"order {SHIPPED} refused its stock_reserved reply: {stuck[0].reason} "
                f"({stuck[0].detail})"
            )

    def orders_settled(self) -> bool:
        """The shipped order has shipped and the unpaid one has ended."""
        shipped, unpaid = self.orders.get(SHIPPED), self.orders.get(UNPAID)
        return (
            shipped is not None
            and shipped.state == "fulfilment.shipped"
            and unpaid is not None
            and unpaid.final
        )

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
        """Every demo job has been seen and has reached a terminal state, and
        the orders have settled."""
        jobs = [self.jobs.get(job_id) for job_id in self.tracked]
        ended = all(job is not None and is_terminal(job.state) for job in jobs)
        return ended and (not self.orders or self.orders_settled())

    def run(self, live: Live) -> None:
        """Drive the story: start workers, cancel, kill, until every job has ended."""
        self.start("A", ("default", "images", "video"), concurrency=16)
        fragile: WorkerProcess | None = None
        deadline = time.monotonic() + DEADLINE
        while True:
            self.refresh()
            self.refresh_orders()
            self.check_workers()
            live.update(self.render())
            if self.done():
                return
            if time.monotonic() > deadline:
                orders = ", ".join(f"{k} {o.state}" for k, o in self.orders.items())
                raise DemoError(
                    f"the jobs did not all finish within {DEADLINE:.0f}s (orders: {orders})"
                )
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

    # -- what it shows ------------------------------------------------------------

    def table_order(self) -> list[int]:
        """The demo's jobs by id, each parent followed by its children."""
        order: list[int] = []
        for job_id in sorted(self.plan.all):
            order.append(job_id)
            if job_id == self.plan.parent:
                order += sorted(self.children)
        return order + sorted(self.order_jobs)

    def render(self) -> RenderableType:
        """The live view: counts by state, every demo job seen so far, the workers."""
        jobs = [self.jobs[job_id] for job_id in self.table_order() if job_id in self.jobs]
        return live_view(
            jobs,
            self.client.counts(),
            self.workers,
            elapsed=self.elapsed(),
            width=self.console.width,
            orders=list(self.orders.values()),
        )

    def timeline(self, job_id: int, why: str, *, moves_and_steps: bool = False) -> Table:
        """A job's timeline (or only its moves and steps), timed from the start of the demo."""
        events = self.client.history(job_id)
        if moves_and_steps:
            events = [e for e in events if not is_note(e) or is_step(e)]
        return timeline_table(
            self.jobs[job_id], events, why, started=self.started, label=self.worker_label
        )

    def order_history(self, key: str, why: str) -> Table:
        """An order's history, timed from the start of the demo."""
        entries = self.client.machines.history(ORDER.name, key)
        return order_history_table(self.orders[key], entries, why, started=self.started)


def order_move(entry: HistoryEntry) -> str:
    """One history entry in words: ``placed -> paid (pay {"amount": 120}, demo)``."""
    why = entry.event or entry.kind
    if entry.kind == "timer":
        late = (entry.detail or {}).get("late_ms", 0) / 1000
        why = f"its timer {entry.event}, fired {late:.2f}s after it was due"
    elif entry.data:
        why += " " + json.dumps(entry.data)
    by = entry.actor or ""
    if by.startswith("job "):
        return f"{entry.from_state} → {entry.to_state} ({why}: the reply of #{by[4:]})"
    if entry.kind == "timer":
        return f"{entry.from_state} → {entry.to_state} ({why})"
    return f"{entry.from_state} → {entry.to_state} ({why}, {by})"


def run_demo(database: str | None, console: Console) -> int:
    """Run the tour on ``database`` (None: a fresh SQLite file of its own, never
    ``$INSTAR_DATABASE``); return 0 once every job has ended, 1 if the tour could
    not go as planned (``DemoError``), 130 if interrupted."""
    folder = Path(tempfile.mkdtemp(prefix="instar-demo-"))
    url = database or f"sqlite:///{folder / 'demo.db'}"
    shown = escape(redact(url))
    console.print(f"[bold]Instar demo[/] on {shown}  (worker logs in {escape(str(folder))})")
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
        tour.open_orders()
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
        console.print(final_table(tour.jobs.values()))
        console.print()
        console.print(tour.timeline(plan.orphaned, "its worker was killed"))
        console.print()
        console.print(
            tour.timeline(
                plan.paused, "paused and resumed; its moves and steps", moves_and_steps=True
            )
        )
        console.print()
        console.print(tour.order_history(SHIPPED, "paid, then shipped once its stock job replied"))
        console.print()
        console.print(
            tour.order_history(UNPAID, f"never paid: cancelled by its {PAYMENT_WINDOW} timer")
        )
        console.print(
            f"\nExplore it: [bold]instar jobs --database {shown}[/]  ·  "
            f"[bold]instar show {plan.paused} --database {shown}[/]\n"
            f"{' ' * 12}[bold]instar machines history {ORDER.name} {SHIPPED} --database {shown}[/]"
        )
        console.print(f"Took {tour.elapsed():.1f}s.")
        return 0
