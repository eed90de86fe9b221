"""Lease rescue: a leased job whose lease ran out has lost its worker.

What happens next comes from the lifecycle table: a job that may be orphaned
(running, serving) is, and in the same transaction re-queued; or failed once
its worker was lost on every allowed attempt; or cancelled if a cancel was
asked for meanwhile. A leased state with no way to orphaned (a service that
was stopping) fails, its error saying its worker was lost. Leases are judged
by the database's clock. Workers not heard of for a day are forgotten.
"""

from __future__ import annotations

import json
import logging

from instar.engine import Engine, plan_move
from instar.engine.moves import moved, system_error
from instar.lifecycle import State, can_transition
from instar.maintenance.settings import SweepSettings, apply_each, plan_each
from instar.models import Job
from instar.store.contract import Move
from instar.vocabulary import Actor, Trigger

log = logging.getLogger("instar.maintenance")

FORGET_AFTER = 86400.0
"""Seconds after its last heartbeat that a worker is dropped from the workers table."""


class LeaseRescue:
    name = "lease_rescue"

    def __init__(self, engine: Engine, settings: SweepSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or SweepSettings()

    def run_once(self) -> int:
        now = self.engine.clock.now()
        expired = self.engine.read.expired_leases(now, self.settings.batch)
        rescued = apply_each(self.name, self.engine, plan_each(self.name, expired, _rescue))
        if rescued:
            log.warning("re-queued or failed %d job(s) whose worker was lost", rescued)
        self.engine.forget_workers(FORGET_AFTER)
        return rescued


def _rescue(job: Job) -> list[Move]:
    if not can_transition(job.state, State.ORPHANED):
        return [_lost(job, f"the worker was lost while the job was {job.state}")]
    orphan = plan_move(job, State.ORPHANED, Trigger.LEASE_EXPIRED, actor=Actor.SYSTEM)
    orphaned = moved(job, orphan)
    if job.cancel_requested:
        then = plan_move(orphaned, State.CANCELLED, Trigger.CANCELLED, actor=Actor.SYSTEM)
    elif job.attempt >= job.max_attempts:
        then = _lost(orphaned, f"the worker was lost on each of {job.attempt} attempts")
    else:
        then = plan_move(orphaned, State.READY, Trigger.REQUEUED, actor=Actor.SYSTEM)
    return [orphan, then]


def _lost(job: Job, message: str) -> Move:
    error = system_error("WorkerLost", message)
    return plan_move(
        job,
        State.FAILED,
        Trigger.TOO_MANY_LOSSES if job.state is State.ORPHANED else Trigger.LEASE_EXPIRED,
        actor=Actor.SYSTEM,
        detail=error,
        error_json=json.dumps(error),
    )
