"""Pause timeouts: a paused job nobody resumed within its ``pause_timeout`` is cancelled."""

from __future__ import annotations

from instar.engine import Engine, plan_move
from instar.lifecycle import State
from instar.maintenance.settings import SweepSettings, apply_each, plan_each
from instar.models import Job
from instar.store.contract import Move
from instar.vocabulary import Actor, Trigger


class PauseTimeouts:
    name = "pause_timeouts"

    def __init__(self, engine: Engine, settings: SweepSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or SweepSettings()

    def run_once(self) -> int:
        now = self.engine.clock.now()
        expired = self.engine.read.expired_pauses(now, self.settings.batch)

        def plan(job: Job) -> list[Move]:
            return [plan_move(job, State.CANCELLED, Trigger.PAUSE_TIMEOUT, actor=Actor.SYSTEM)]

        return apply_each(self.name, self.engine, plan_each(self.name, expired, plan))
