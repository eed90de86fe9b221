"""Waiters: jobs that wait on others, checked from the other side.

Every change that ends a job releases its waiters in the same transaction,
so this sweep normally finds nothing. It is the defence in depth: pending or
joining jobs whose awaited jobs have all ended are released, and a suspended
job with nothing left that could wake it (no timer, no pending awakeable, no
child joined) is woken with a ``stranded`` event saying so.
"""

from __future__ import annotations

import logging

from instar.engine import Engine, plan_move
from instar.errors import DatabaseUnavailable
from instar.lifecycle import State
from instar.maintenance.settings import SweepSettings, apply_each, plan_each
from instar.models import Job
from instar.store.contract import Move
from instar.vocabulary import Actor, Trigger

log = logging.getLogger("instar.maintenance")


class Waiters:
    name = "waiters"

    def __init__(self, engine: Engine, settings: SweepSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or SweepSettings()

    def run_once(self) -> int:
        released = 0
        for waiter in self.engine.read.stranded_waiters(self.settings.batch):
            try:
                released += self.engine.release_waiters([waiter])
            except DatabaseUnavailable:
                raise
            except Exception as exc:
                log.warning("%s: skipped job %d: %s", self.name, waiter.id, exc)
        detail = {"reason": "suspended with no timer, no pending signal and no child to wait for"}

        def plan(job: Job) -> list[Move]:
            return [
                plan_move(job, State.READY, Trigger.STRANDED, actor=Actor.SYSTEM, detail=detail)
            ]

        stranded = self.engine.read.unwakeable(self.settings.batch)
        woken = apply_each(self.name, self.engine, plan_each(self.name, stranded, plan))
        if woken:
            log.warning("woke %d suspended job(s) that nothing could wake", woken)
        return released + woken
