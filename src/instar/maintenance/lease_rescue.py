"""Lease rescue: a leased job whose lease ran out has lost its worker.

It is orphaned, then in the same transaction re-queued; or failed once its
worker was lost on every allowed attempt; or cancelled if a cancel was asked
for meanwhile. Leases are judged by the maintenance leader's clock.
"""

from __future__ import annotations

import json
import logging

from instar.engine import Engine, plan_move
from instar.engine.moves import moved, system_error
from instar.lifecycle import State
from instar.maintenance.settings import SweepSettings
from instar.store.contract import Move
from instar.vocabulary import Actor, Trigger

log = logging.getLogger("instar.maintenance")


class LeaseRescue:
    name = "lease_rescue"

    def __init__(self, engine: Engine, settings: SweepSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or SweepSettings()

    def run_once(self) -> int:
        moves: list[Move] = []
        now = self.engine.clock.now()
        for job in self.engine.read.expired_leases(now, self.settings.batch):
            orphan = plan_move(job, State.ORPHANED, Trigger.LEASE_EXPIRED, actor=Actor.SYSTEM)
            orphaned = moved(job, orphan)
            if job.cancel_requested:
                then = plan_move(orphaned, State.CANCELLED, Trigger.CANCELLED, actor=Actor.SYSTEM)
            elif job.attempt >= job.max_attempts:
                error = system_error(
                    "WorkerLost", f"the worker was lost on each of {job.attempt} attempts"
                )
                then = plan_move(
                    orphaned,
                    State.FAILED,
                    Trigger.TOO_MANY_LOSSES,
                    actor=Actor.SYSTEM,
                    detail=error,
                    error_json=json.dumps(error),
                )
            else:
                then = plan_move(orphaned, State.READY, Trigger.REQUEUED, actor=Actor.SYSTEM)
            moves += [orphan, then]
        rescued = sum(self.engine.apply(moves)) // 2
        if rescued:
            log.warning("re-queued or failed %d job(s) whose worker was lost", rescued)
        return rescued
