"""The demo's jobs: the module-level ``app`` and every handler registered on it.

The worker subprocesses load this ``app`` (``instar.demo.handlers:app``); a worker
started with ``--database`` points it at the demo's file. The story enqueues
these jobs by name through a second App on the same database, and registers
the ``order`` machine (``ORDER``) there; the workers only need its guard, to
deliver the stock job's reply.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import instar
from instar.machines import Machine, context, enqueue, event

app = instar.App()
"""The demo's handlers; a worker started with ``--database`` points it at the demo's file."""

INGEST_LEASE = 2.0
"""Short, so that the job of the killed worker is rescued within seconds."""


# -- plain handlers: success, retries, failures, a timer, a cancel, a lost worker --


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


# -- a durable machine: an order, whose packing enqueues a job that replies ------

PAYMENT_WINDOW = "3s"
"""How long an order waits for its payment in the demo (a shop would wait 30m)."""

CARRIERS = frozenset({"dhl", "ups"})
"""The carriers that collect today: the guard of the move to shipped asks."""


@app.job(name="reserve_stock")
def reserve_stock(ctx: instar.Context, order: str) -> dict[str, Any]:
    """Entered with the order's packing state; its result is the order's
    ``stock_reserved`` event, delivered as the job completes."""
    ctx.progress(0, 1, f"reserving stock for {order}")
    time.sleep(0.4)
    ctx.progress(1, 1, f"stock reserved for {order}")
    return {"order": order, "carrier": "dhl", "parcels": 2}


def carrier_available(context: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """The guard of packing -> shipped: a carrier that collects today."""
    return data.get("carrier") in CARRIERS


def order_machine() -> Machine:
    """The order of the README, with the demo's short payment window."""
    order = Machine(
        "order", version=1, initial="placed", context={"order_id": "", "total": 0, "paid": 0}
    )
    order.event("pay", amount="number")
    order.state("placed", after=[(PAYMENT_WINDOW, "payment_timeout")])
    order.state("paid")
    order.state("fulfilment", initial="packing", after=[("7d", "lost")])
    reserve = enqueue("reserve_stock", args={"order": context("order_id")}, reply="stock_reserved")
    order.state("fulfilment.packing", enter=[reserve])
    order.state("fulfilment.shipped")
    order.state("delivered", final=True)
    order.state("cancelled", final=True)
    order.transition(
        "placed",
        "pay",
        "paid",
        when=event("amount").ge(context("total")),
        set={"paid": event("amount")},
    )
    order.transition("placed", "payment_timeout", "cancelled")
    order.transition("paid", "ship", "fulfilment")
    order.transition(
        "fulfilment.packing",
        "stock_reserved",
        "fulfilment.shipped",
        guard=carrier_available,
        set={"carrier": event("carrier")},
    )
    order.transition("fulfilment.shipped", "deliver", "delivered")
    order.transition(["fulfilment", "paid"], "cancel", "cancelled")
    order.transition("fulfilment", "lost", "cancelled")
    return order


ORDER = order_machine()
"""Registered by the story; its guard is known to every worker (below)."""

app.machines.use_guards(ORDER)  # opens nothing: the workers learn the guard by name
