"""Pause timeouts: a paused job nobody resumed within its ``pause_timeout`` is cancelled."""

from __future__ import annotations

from instar.engine import Engine, plan_move
from instar.lifecycle import State
from instar.maintenance.settings import SweepSettings
from instar.vocabulary import Actor, Trigger


class PauseTimeouts:
    name = "pause_timeouts"

    def __init__(self, engine: Engine, settings: SweepSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or SweepSettings()

    def run_once(self) -> int:
        now = self.engine.clock.now()
        expired = self.engine.read.expired_pauses(now, self.settings.batch)
        moves = [
            plan_move(job, State.CANCELLED, Trigger.PAUSE_TIMEOUT, actor=Actor.SYSTEM)
            for job in expired
        ]
        return sum(self.engine.apply(moves))
