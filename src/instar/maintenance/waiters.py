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
from instar.lifecycle import State
from instar.maintenance.settings import SweepSettings
from instar.vocabulary import Actor, Trigger

log = logging.getLogger("instar.maintenance")


class Waiters:
    name = "waiters"

    def __init__(self, engine: Engine, settings: SweepSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or SweepSettings()

    def run_once(self) -> int:
        released = self.engine.release_waiters(
            self.engine.read.stranded_waiters(self.settings.batch)
        )
        detail = {"reason": "suspended with no timer, no pending signal and no child to wait for"}
        wakes = [
            plan_move(job, State.READY, Trigger.STRANDED, actor=Actor.SYSTEM, detail=detail)
            for job in self.engine.read.unwakeable(self.settings.batch)
        ]
        woken = sum(self.engine.apply(wakes))
        if woken:
            log.warning("woke %d suspended job(s) that nothing could wake", woken)
        return released + woken
