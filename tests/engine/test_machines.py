"""Durable machines on both backends: each semantic the engine promises, by name."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import instar
from instar.clock import FrozenClock
from instar.errors import PayloadError
from instar.machines import (
    Conflict,
    DefinitionConflict,
    Happening,
    InstanceExists,
    InstanceNotFound,
    Machine,
    context,
    enqueue,
    event,
    send,
)
from instar.maintenance.machine_timers import MachineHistory, MachineTimers
from instar.maintenance.runner import Maintenance
from tests.conftest import execute_raw

ROOT = Path(__file__).resolve().parents[2]

ORDER_TOML = """
[machine]
name = "order"
version = 1
initial = "placed"

[context]
total = 0
paid = 0
order_id = ""

[events.pay]
data = { amount = "number" }

[states.placed]
after = [{ delay = "30m", event = "payment_timeout" }]

[states.paid]

[states.fulfilment]
initial = "packing"
after = [{ delay = "7d", event = "lost" }]

[states.fulfilment.states.packing]

[[states.fulfilment.states.packing.enter]]
enqueue = "shop.reserve_stock"
args = { order = { context = "order_id" } }
reply = "stock_reserved"

[states.fulfilment.states.shipped]

[states.delivered]
final = true

[states.cancelled]
final = true

[[transitions]]
from = "placed"
on = "pay"
to = "paid"
when = { event = "amount", ge = { context = "total" } }
set = { paid = { event = "amount" } }

[[transitions]]
from = "placed"
on = "payment_timeout"
to = "cancelled"

[[transitions]]
from = "paid"
on = "ship"
to = "fulfilment"

[[transitions]]
from = "fulfilment.packing"
on = "stock_reserved"
to = "fulfilment.shipped"
guard = "carrier_available"

[[transitions]]
from = "fulfilment.shipped"
on = "deliver"
to = "delivered"

[[transitions]]
from = ["fulfilment", "paid"]
on = "cancel"
to = "cancelled"

[[transitions]]
from = "fulfilment"
on = "lost"
to = "cancelled"
"""

COUNTER_TOML = """
[machine]
name = "counter"
version = 1
initial = "even"

[context]
n = 0

[states.even]
[states.odd]
[states.stopped]
final = true

[[transitions]]
from = "even"
on = "tick"
to = "odd"
add = { n = 1 }

[[transitions]]
from = "odd"
on = "tick"
to = "even"
add = { n = 1 }

[[transitions]]
from = "odd"
on = "stop"
to = "stopped"
"""

CARRIER = {"up": True}


def carrier_available(ctx: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    return CARRIER["up"]


def shop(app: instar.App) -> None:
    """The order machine with its job and guard, on ``app``."""

    @app.job(name="shop.reserve_stock")
    def reserve_stock(order: str) -> dict[str, Any]:
        return {"reserved": order}

    CARRIER["up"] = True
    app.machines.register_text(ORDER_TOML, guards={"carrier_available": carrier_available})


def fire_timers(app: instar.App) -> int:
    return MachineTimers(app.engine, lambda: app.machines.runtime).run_once()


def timers(app: instar.App, machine: str, key: str) -> list[tuple[str, str, float]]:
    return [(t.state, t.event, t.due_at) for t in app.engine.store.timers_of(machine, key)]


# -- 1. exactly one winner ---------------------------------------------------------------------

SENDER = """
import sys, instar
app = instar.App(sys.argv[1])
for _ in range(4):
    app.machines.send("counter", "c", "tick")
app.close()
"""


def test_fifty_concurrent_senders_leave_a_history_with_consecutive_seq_each_move_legal(
    app: instar.App,
) -> None:
    app.machines.register_text(COUNTER_TOML)
    app.machines.create("counter", "c")
    errors: list[BaseException] = []
    apps = [instar.App(app.database) for _ in range(8)]  # 5 threads share each one

    def thread_sender(mine: instar.App) -> None:
        try:
            for _ in range(4):
                mine.machines.send("counter", "c", "tick")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=thread_sender, args=(apps[i % 8],)) for i in range(40)]
    processes = [
        subprocess.Popen([sys.executable, "-c", SENDER, app.database], cwd=ROOT) for _ in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.wait(timeout=120) for p in processes] == [0] * 10
    for mine in apps:
        mine.close()
    assert errors == []
    history = app.machines.history("counter", "c")
    assert [h.seq for h in history] == list(range(1, 202))
    for before, after in itertools.pairwise(history):
        assert after.from_state == before.to_state
        assert after.context["n"] == before.context["n"] + 1
    assert app.machines.get("counter", "c").context == {"n": 200}
    assert app.machines.verify("counter", "c").ok


def test_a_send_that_lost_a_race_is_judged_against_the_new_state(app: instar.App) -> None:
    app.machines.register_text(COUNTER_TOML)
    app.machines.create("counter", "c")
    app.machines.send("counter", "c", "tick")  # odd
    results = []
    barrier = threading.Barrier(2)

    def stop() -> None:
        with instar.App(app.database) as mine:
            barrier.wait()
            results.append(mine.machines.send("counter", "c", "stop"))

    racers = [threading.Thread(target=stop) for _ in range(2)]
    for r in racers:
        r.start()
    for r in racers:
        r.join()
    assert sorted(r.accepted for r in results) == [False, True]
    refused = next(r for r in results if not r.accepted)
    assert (refused.reason, refused.state) == ("final_state", "stopped")


def test_expect_seq_refuses_a_send_on_an_instance_that_moved_on(app: instar.App) -> None:
    app.machines.register_text(COUNTER_TOML)
    app.machines.create("counter", "c")
    first = app.machines.send("counter", "c", "tick", expect_seq=1)
    assert (first.accepted, first.seq) == (True, 2)
    with pytest.raises(Conflict, match="is at seq 2, not 1"):
        app.machines.send("counter", "c", "tick", expect_seq=1)
    assert app.machines.get("counter", "c").seq == 2


def test_a_repeated_idempotency_key_returns_the_first_outcome_and_writes_nothing(
    app: instar.App,
) -> None:
    app.machines.register_text(COUNTER_TOML)
    app.machines.create("counter", "c")
    first = app.machines.send("counter", "c", "tick", idempotency_key="evt_42")
    again = app.machines.send("counter", "c", "tick", idempotency_key="evt_42")
    assert again == first
    assert app.machines.get("counter", "c").seq == 2
    refused = app.machines.send("counter", "c", "nothing", idempotency_key="evt_43")
    assert app.machines.send("counter", "c", "nothing", idempotency_key="evt_43") == refused
    assert len(app.machines.refusals("counter", "c")) == 1


# -- 2. history is the record ------------------------------------------------------------------


def test_verify_names_an_instance_whose_history_was_tampered_with(app: instar.App) -> None:
    shop(app)
    m = app.machines
    m.create("order", "A-1", {"total": 120})
    m.create("order", "A-2", {"total": 50})
    m.send("order", "A-1", "pay", {"amount": 130})
    m.send("order", "A-2", "pay", {"amount": 50})
    assert m.verify("order", "A-1").ok and m.verify("order", "A-2").ok
    execute_raw(
        app.database,
        "UPDATE machine_history SET context = ? "
        "WHERE machine = 'order' AND key = 'A-1' AND seq = 2",
        (json.dumps({"total": 120, "paid": 999, "order_id": ""}),),
    )
    check = m.verify("order", "A-1")
    assert not check.ok
    assert any(p.startswith("seq 2: replayed context differs") for p in check.problems)
    assert [v.key for v in m.verify_all("order") if not v.ok] == ["A-1"]


def test_verify_names_an_instance_whose_timer_was_dropped_or_state_rewritten(
    app: instar.App,
) -> None:
    shop(app)
    m = app.machines
    m.create("order", "A-1", {"total": 120})
    execute_raw(app.database, "DELETE FROM machine_timers WHERE key = ?", ("A-1",))
    assert m.verify("order", "A-1").problems == [
        "the timer 'payment_timeout' of placed is not armed"
    ]
    m.create("order", "A-2", {"total": 120})
    execute_raw(app.database, "UPDATE machine_instances SET state = 'paid' WHERE key = ?", ("A-2",))
    problems = m.verify("order", "A-2").problems
    assert any("the instance says paid at seq 1" in p for p in problems)


# -- 3. rollback -------------------------------------------------------------------------------


def test_rollback_appends_an_entry_restoring_state_and_context_and_rearms_timers_from_now(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app
    shop(app)
    m = app.machines
    m.create("order", "A-1", {"total": 120, "order_id": "A-1"})
    m.send("order", "A-1", "pay", {"amount": 120})
    m.send("order", "A-1", "ship")
    jobs_before = [j.id for j in app.jobs()]
    before = [h.as_dict() for h in m.history("order", "A-1")]
    clock.advance(600)
    restored = m.rollback("order", "A-1", to_seq=1, reason="payment bounced")
    assert (restored.state, restored.seq, restored.context["paid"]) == ("placed", 4, 0)
    history = m.history("order", "A-1")
    assert [h.as_dict() for h in history[:3]] == before
    last = history[-1]
    assert (last.kind, last.from_state, last.to_state) == (
        "rolled_back",
        "fulfilment.packing",
        "placed",
    )
    assert last.detail == {"to_seq": 1, "reason": "payment bounced"}
    assert timers(app, "order", "A-1") == [("placed", "payment_timeout", clock.now() + 1800)]
    assert [j.id for j in app.jobs()] == jobs_before  # the job enqueued is not recalled
    assert m.verify("order", "A-1").ok
    with pytest.raises(instar.errors.InvalidOption, match="has no history entry 9"):
        m.rollback("order", "A-1", to_seq=9, reason="x")


# -- 4. timers ---------------------------------------------------------------------------------


def test_a_timer_is_armed_on_entering_and_cancelled_on_leaving_in_the_same_transaction(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app
    shop(app)
    m = app.machines
    m.create("order", "A-1", {"total": 10})
    assert timers(app, "order", "A-1") == [("placed", "payment_timeout", clock.now() + 1800)]
    m.send("order", "A-1", "pay", {"amount": 10})
    assert timers(app, "order", "A-1") == []


def test_a_superstate_timer_survives_moves_among_its_children(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app
    shop(app)
    m = app.machines
    m.create("order", "A-1", {"total": 10, "order_id": "A-1"})
    m.send("order", "A-1", "pay", {"amount": 10})
    m.send("order", "A-1", "ship")
    armed = timers(app, "order", "A-1")
    assert armed == [("fulfilment", "lost", clock.now() + 7 * 86400)]
    clock.advance(60)
    assert m.send("order", "A-1", "stock_reserved").state == "fulfilment.shipped"
    assert timers(app, "order", "A-1") == armed


def test_a_due_timer_fires_once_whoever_runs_maintenance(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app
    shop(app)
    app.machines.create("order", "A-1", {"total": 10})
    clock.advance(1800)
    runtime = app.machines.runtime
    leaders = [Maintenance(app.engine, f"w{i}", machines=lambda: runtime) for i in range(2)]
    fired = [leader.run_if_leader() for leader in leaders]
    assert [r["machine_timers"] if r else None for r in fired] == [1, None]
    assert fire_timers(app) == 0
    history = app.machines.history("order", "A-1")
    assert [(h.kind, h.event, h.to_state) for h in history[1:]] == [
        ("timer", "payment_timeout", "cancelled")
    ]
    assert history[-1].detail == {
        "state": "placed",
        "due_at": history[0].at.timestamp() + 1800,
        "late_ms": 0,
    }


def test_a_timer_due_while_everything_was_down_fires_at_restart_with_its_lateness(
    database: str, clock: FrozenClock
) -> None:
    with instar.App(database, clock=clock) as app:
        shop(app)
        app.machines.create("order", "A-1", {"total": 10})
    clock.advance(1800 + 3600)  # an hour past due, with nothing running
    with instar.App(database, clock=clock) as app:
        shop(app)
        assert fire_timers(app) == 1
        entry = app.machines.history("order", "A-1")[-1]
        assert (entry.kind, entry.to_state, entry.detail and entry.detail["late_ms"]) == (
            "timer",
            "cancelled",
            3_600_000,
        )


def test_a_stale_timer_is_discarded(frozen_app: instar.App, clock: FrozenClock) -> None:
    app = frozen_app
    shop(app)
    app.machines.create("order", "A-1", {"total": 10})
    app.machines.send("order", "A-1", "pay", {"amount": 10})
    execute_raw(
        app.database,
        "INSERT INTO machine_timers (machine, key, state, event, due_at, seq) "
        "VALUES ('order', 'A-1', 'placed', 'payment_timeout', ?, 1)",
        (clock.now() - 1,),
    )
    assert fire_timers(app) == 0
    assert timers(app, "order", "A-1") == []
    assert app.machines.get("order", "A-1").state == "paid"


def test_a_timer_that_cannot_fire_holds_back_no_other(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app
    shop(app)
    for key in ("A-1", "A-2", "A-3"):
        app.machines.create("order", key, {"total": 10})
    execute_raw(app.database, "UPDATE machine_instances SET context = '{' WHERE key = ?", ("A-2",))
    clock.advance(1800)
    assert fire_timers(app) == 2
    assert [app.engine.store.get_instance("order", k).state for k in ("A-1", "A-3")] == [  # type: ignore[union-attr]
        "cancelled",
        "cancelled",
    ]
    assert timers(app, "order", "A-2") == [("placed", "payment_timeout", clock.now())]


# -- 5. actions and replies --------------------------------------------------------------------


def test_an_entry_action_enqueues_its_job_in_the_transition_and_its_reply_comes_back_once(
    app: instar.App,
) -> None:
    shop(app)
    m = app.machines
    m.create("order", "A-1", {"total": 10, "order_id": "A-1"})
    m.send("order", "A-1", "pay", {"amount": 10})
    ship = m.send("order", "A-1", "ship", idempotency_key="ship-1")
    assert m.send("order", "A-1", "ship", idempotency_key="ship-1") == ship
    (job,) = app.jobs()
    assert (job.name, job.args, job.key is not None) == (
        "shop.reserve_stock",
        {"order": "A-1"},
        True,
    )
    app.run_worker(burst=True)
    history = m.history("order", "A-1")
    reply = history[-1]
    assert (reply.event, reply.to_state, reply.actor, reply.data) == (
        "stock_reserved",
        "fulfilment.shipped",
        f"job {job.id}",
        {"reserved": "A-1"},
    )
    completed = [e for e in app.history(job.id) if e.to_state == "completed"]
    assert [e.at for e in completed] == [reply.at]  # one transaction: the same instant
    assert len(app.jobs()) == 1 and m.verify("order", "A-1").ok


def test_an_action_that_cannot_run_refuses_the_event_and_enqueues_nothing(app: instar.App) -> None:
    shop(app)
    m = app.machines
    m.create("order", "A-1", {"total": 10})
    m.send("order", "A-1", "pay", {"amount": 10})
    with instar.App(app.database) as lacking:  # a process that does not have the job
        refused = lacking.machines.send("order", "A-1", "ship")
    assert (refused.accepted, refused.reason) == (False, "action_error")
    assert "enter action 1 of fulfilment.packing" in (refused.detail or "")
    assert "shop.reserve_stock" in (refused.detail or "")
    assert app.jobs() == [] and m.get("order", "A-1").state == "paid"


def test_events_sent_by_actions_are_bounded_per_transaction_however_they_fan_out(
    app: instar.App,
) -> None:
    """A root whose entry sends to 32 instances, each of which sends to 32
    more: 1,056 events in one transaction, past the 1,000 allowed. The events
    that would go past are refused as ``action_error`` and the rest stands."""
    fan = 32
    root = Machine("root", 1, initial="idle")
    root.state("idle").state("fired", enter=[send("mid", f"m{i}", "go") for i in range(fan)])
    root.transition("idle", "go", "fired")
    mid = Machine("mid", 1, initial="idle")
    mid.state("idle").state("fired", enter=[send("leaf", f"l{i}", "go") for i in range(fan)])
    mid.transition("idle", "go", "fired")
    leaf = Machine("leaf", 1, initial="a", context={"n": 0})
    leaf.state("a").state("b")
    leaf.transition("a", "go", "b", add={"n": 1}).transition("b", "go", "a", add={"n": 1})
    m = app.machines
    for machine in (root, mid, leaf):
        m.register(machine)
    m.create("root", "r")
    for i in range(fan):
        m.create("mid", f"m{i}")
        m.create("leaf", f"l{i}")
    assert m.send("root", "r", "go").accepted
    fired = [i for i in range(fan) if m.get("mid", f"m{i}").state == "fired"]
    assert fired == list(range(30))  # 32 + 30 x 32 = 992 sends; a 31st would pass 1,000
    assert all(m.get("leaf", f"l{i}").context == {"n": 30} for i in range(fan))
    for i in (30, 31):
        (refusal,) = m.refusals("mid", f"m{i}")
        assert refusal.reason == "action_error"
        assert "more than 1,000 events in one transaction" in (refusal.detail or "")


def test_a_refused_reply_is_logged_and_the_job_still_completes(app: instar.App) -> None:
    shop(app)
    m = app.machines
    m.create("order", "A-1", {"total": 10, "order_id": "A-1"})
    m.send("order", "A-1", "pay", {"amount": 10})
    m.send("order", "A-1", "ship")
    CARRIER["up"] = False
    app.run_worker(burst=True)
    (job,) = app.jobs()
    assert job.state == "completed"
    (refusal,) = m.refusals("order", "A-1")
    assert (refusal.event, refusal.reason, refusal.actor) == (
        "stock_reserved",
        "guard_false",
        f"job {job.id}",
    )


# -- 6. hierarchy ------------------------------------------------------------------------------


def nested(app: instar.App) -> list[str]:
    """A machine whose actions record their order in the jobs they enqueue."""
    steps: list[str] = []

    @app.job(name="step")
    def step(what: str) -> None:
        steps.append(what)

    agent = Machine("agent", version=1, initial="coding")
    agent.state("coding", initial="writing", exit=[enqueue("step", {"what": "exit coding"})])
    agent.state("coding.writing", exit=[enqueue("step", {"what": "exit writing"})])
    agent.state(
        "coding.testing", initial="unit", enter=[enqueue("step", {"what": "enter testing"})]
    )
    agent.state("coding.testing.unit", enter=[enqueue("step", {"what": "enter unit"})])
    agent.state("review", enter=[enqueue("step", {"what": "enter review"})])
    agent.state("done", final=True)
    agent.transition("coding", "next", "review")
    agent.transition("coding.writing", "next", "coding.testing", when=context("ready").eq(True))
    agent.transition("coding.writing", "next", "done", when=context("skip").eq(True))
    agent.transition("coding.testing", "pass", "review")
    agent.transition("review", "approve", "done")
    agent.transition("coding.writing", "ready", "coding.writing", set={"ready": True})
    app.machines.register(agent)
    return steps


def test_the_deepest_active_state_handles_an_event_first_in_definition_order(
    app: instar.App,
) -> None:
    nested(app)
    m = app.machines
    m.create("agent", "a", {"ready": False, "skip": False})
    assert m.send("agent", "a", "next").state == "review"  # writing's own are false: coding's
    m.create("agent", "b", {"ready": True, "skip": True})
    assert m.send("agent", "b", "next").state == "coding.testing.unit"  # the first that holds


def test_exit_actions_run_innermost_first_and_entry_actions_outermost_first(
    app: instar.App,
) -> None:
    nested(app)
    m = app.machines
    m.create("agent", "a", {"ready": True, "skip": False})
    m.send("agent", "a", "next")
    m.send("agent", "a", "pass")
    order = [j.args["what"] for j in sorted(app.jobs(), key=lambda j: j.id)]
    assert order == ["exit writing", "enter testing", "enter unit", "exit coding", "enter review"]


# -- 7. refusals -------------------------------------------------------------------------------


def test_a_refused_event_changes_nothing_and_says_why(frozen_app: instar.App) -> None:
    app = frozen_app
    shop(app)
    m = app.machines

    def boom(ctx: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
        raise RuntimeError("carrier API down")

    m.create("order", "A-1", {"total": 100, "order_id": "A-1"})
    before = (m.get("order", "A-1"), m.history("order", "A-1"), timers(app, "order", "A-1"))
    refusals = [
        m.send("order", "A-1", "ship"),
        m.send("order", "A-1", "pay", {"amount": 5}),
        m.send("order", "A-1", "pay", {"amount": "a lot"}),
    ]
    assert before == (m.get("order", "A-1"), m.history("order", "A-1"), timers(app, "order", "A-1"))
    assert [(r.accepted, r.reason) for r in refusals] == [
        (False, "no_transition"),
        (False, "condition_false"),
        (False, "invalid_data"),
    ]
    assert "field 'amount' must be number" in (refusals[2].detail or "")
    m.send("order", "A-1", "pay", {"amount": 100})
    m.send("order", "A-1", "ship")
    CARRIER["up"] = False
    assert m.send("order", "A-1", "stock_reserved").reason == "guard_false"
    m.runtime.register({**m.definition("order").raw}, guards={"carrier_available": boom})
    guarded = m.send("order", "A-1", "stock_reserved")
    assert (guarded.reason, guarded.detail) == (
        "guard_error",
        "guard 'carrier_available' raised RuntimeError: carrier API down",
    )
    m.send("order", "A-1", "cancel")
    assert m.send("order", "A-1", "pay", {"amount": 1}).reason == "final_state"
    logged = [r.reason for r in m.refusals("order", "A-1")]
    assert logged == [
        "final_state",
        "guard_error",
        "guard_false",
        "invalid_data",
        "condition_false",
        "no_transition",
    ]
    assert [h.kind for h in m.history("order", "A-1")] == ["created", "event", "event", "event"]


def test_the_refusal_log_is_bounded(app: instar.App) -> None:
    app.machines.register_text(COUNTER_TOML)
    app.machines.create("counter", "c")
    for i in range(105):
        app.machines.send("counter", "c", "stop", {"i": i})
    kept = app.machines.refusals("counter", "c", limit=1000)
    assert len(kept) == 100 and kept[0].event == "stop"


def test_a_final_state_cancels_its_timers_and_only_rollback_leaves_it(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    app = frozen_app
    shop(app)
    m = app.machines
    m.create("order", "A-1", {"total": 10, "order_id": "A-1"})
    m.send("order", "A-1", "pay", {"amount": 10})
    m.send("order", "A-1", "ship")
    assert timers(app, "order", "A-1") != []
    m.send("order", "A-1", "cancel")
    assert timers(app, "order", "A-1") == [] and m.get("order", "A-1").final
    restored = m.rollback("order", "A-1", to_seq=3, reason="cancelled by mistake")
    assert (restored.state, restored.final) == ("fulfilment.packing", False)
    assert timers(app, "order", "A-1") == [("fulfilment", "lost", clock.now() + 7 * 86400)]


# -- 8. payloads -------------------------------------------------------------------------------


def test_context_and_data_are_json_objects_within_the_size_limit(app: instar.App) -> None:
    app.machines.register_text(COUNTER_TOML)
    m = app.machines
    m.create("counter", "c")
    with pytest.raises(PayloadError, match="must be a JSON object"):
        m.send("counter", "c", "tick", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match="no NaN"):
        m.send("counter", "c", "tick", {"x": float("nan")})
    with pytest.raises(PayloadError, match="over the limit of 262144"):
        m.send("counter", "c", "tick", {"blob": "x" * 300_000})
    with pytest.raises(PayloadError, match="over the limit"):
        m.create("counter", "big", {"blob": "x" * 300_000})
    with pytest.raises(InstanceNotFound):
        m.get("counter", "big")
    assert m.get("counter", "c").seq == 1


def test_a_context_update_past_the_limit_is_refused(app: instar.App) -> None:
    grow = Machine("grow", version=1, initial="s", context={"blob": ""})
    grow.state("s").state("end", final=True)
    grow.transition("s", "put", "s", set={"blob": event("blob"), "copy": event("blob")})
    grow.transition("s", "finish", "end")
    app.machines.register(grow)
    app.machines.create("grow", "g")
    result = app.machines.send("grow", "g", "put", {"blob": "x" * 200_000})
    assert (result.accepted, result.reason) == (False, "invalid_data")
    assert "over the limit" in (result.detail or "")


def test_guards_see_copies_of_the_context_and_data(app: instar.App) -> None:
    def meddle(ctx: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
        ctx["n"] = 1_000  # type: ignore[index]
        data["x"] = "changed"  # type: ignore[index]
        return True

    counter = Machine("meddled", version=1, initial="a", context={"n": 0})
    counter.state("a").state("b", final=True)
    counter.transition("a", "go", "b", guard=meddle, set={"x": event("x")})
    app.machines.register(counter)
    app.machines.create("meddled", "m")
    app.machines.send("meddled", "m", "go", {"x": "original"})
    assert app.machines.get("meddled", "m").context == {"n": 0, "x": "original"}


# -- 9. listeners ------------------------------------------------------------------------------


def test_listeners_hear_enter_exit_transition_and_refusal_after_commit(app: instar.App) -> None:
    shop(app)
    m = app.machines
    heard: list[tuple[str, str | None, str | None, str]] = []

    def seen(h: Happening) -> None:
        with instar.App(app.database) as other:  # committed: another connection sees it
            state = other.machines.get(h.machine, h.key).state
        heard.append((h.kind, h.state or h.event, h.reason, state))

    for hook in (m.on_enter("order"), m.on_exit("order"), m.on_transition("order"), m.on_refusal()):
        hook(seen)

    @m.on_transition("order", "paid")
    def broken(h: Happening) -> None:
        raise RuntimeError("a listener's own bug")

    m.create("order", "A-1", {"total": 10})
    result = m.send("order", "A-1", "pay", {"amount": 10})
    m.send("order", "A-1", "nothing")
    assert result.accepted and m.get("order", "A-1").state == "paid"
    assert heard == [
        ("enter", "placed", None, "placed"),
        ("exit", "placed", None, "paid"),
        ("transition", "pay", None, "paid"),
        ("enter", "paid", None, "paid"),
        ("refusal", "nothing", "no_transition", "paid"),
    ]


# -- 10. many instances, retention -------------------------------------------------------------


def test_instances_are_listed_by_leaf_or_superstate_with_counts(app: instar.App) -> None:
    shop(app)
    m = app.machines
    for i in range(6):
        m.create("order", f"A-{i}", {"total": 1, "order_id": f"A-{i}"})
    for i in range(4):
        m.send("order", f"A-{i}", "pay", {"amount": 1})
    for i in range(2):
        m.send("order", f"A-{i}", "ship")
    m.send("order", "A-0", "stock_reserved")
    assert [i.key for i in m.instances("order", "fulfilment")] == ["A-0", "A-1"]
    assert [i.key for i in m.instances("order", "fulfilment.packing")] == ["A-1"]
    assert [i.key for i in m.instances("order", "placed")] == ["A-4", "A-5"]
    assert [i.key for i in m.instances("order", limit=2, after="A-2")] == ["A-3", "A-4"]
    assert m.counts("order") == {
        "placed": 2,
        "paid": 2,
        "fulfilment": 2,
        "fulfilment.packing": 1,
        "fulfilment.shipped": 1,
    }


def test_history_retention_keeps_the_last_entries_and_verify_and_rollback_still_work(
    app: instar.App,
) -> None:
    app.machines.register_text(COUNTER_TOML)
    m = app.machines
    m.create("counter", "c")
    for _ in range(9):
        m.send("counter", "c", "tick")
    m.retain("counter", keep_last=3)
    assert MachineHistory(app.engine).run_once() == 7
    assert [h.seq for h in m.history("counter", "c")] == [8, 9, 10]
    assert m.verify("counter", "c").ok
    with pytest.raises(instar.errors.InvalidOption, match="pruned by its retention"):
        m.rollback("counter", "c", to_seq=2, reason="too far")
    restored = m.rollback("counter", "c", to_seq=8, reason="back two")
    assert (restored.context, restored.seq) == ({"n": 7}, 11)
    assert m.verify("counter", "c").ok


# -- versions ----------------------------------------------------------------------------------


def test_a_version_never_changes_and_instances_stay_on_theirs_until_migrated(
    app: instar.App,
) -> None:
    m = app.machines
    m.register_text(COUNTER_TOML)
    m.register_text(COUNTER_TOML)  # the same text again: harmless
    with pytest.raises(DefinitionConflict, match="register the new text as version 2"):
        m.register_text(COUNTER_TOML.replace("add = { n = 1 }", "add = { n = 2 }", 1))
    m.create("counter", "old")
    m.send("counter", "old", "tick")
    m.register_text(COUNTER_TOML.replace("version = 1", "version = 2").replace("odd", "uneven"))
    m.create("counter", "new")
    assert (m.get("counter", "new").version, m.get("counter", "old").version) == (2, 1)
    assert m.send("counter", "old", "tick").state == "even"  # still version 1's table
    m.send("counter", "old", "tick")
    with pytest.raises(instar.errors.InvalidOption, match="map it"):
        m.migrate("counter", to_version=2)
    assert m.migrate("counter", to_version=2, state_map={"odd": "uneven"}) == 1
    migrated = m.get("counter", "old")
    assert (migrated.version, migrated.state) == (2, "uneven")
    assert m.history("counter", "old")[-1].kind == "migrated"
    assert m.verify("counter", "old").ok
    with pytest.raises(InstanceExists):
        m.create("counter", "old")


def test_every_call_has_an_async_twin(app: instar.App) -> None:
    m = app.machines
    ping = Machine("ping", 1, initial="a").state("a").state("b", final=True)
    ping.transition("a", "go", "b")

    async def use() -> None:
        await m.register_async(ping)
        await m.create_async("ping", "p")
        result = await m.send_async("ping", "p", "go")
        assert result.accepted and (await m.get_async("ping", "p")).final
        assert [h.kind for h in await m.history_async("ping", "p")] == ["created", "event"]
        assert (await m.verify_async("ping", "p")).ok
        assert "a --> b : go" in await m.diagram_async("ping")
        assert await m.counts_async("ping") == {"b": 1}

    asyncio.run(use())
