"""Timers: every state that waits for a time moves on when the time comes.

Scheduled jobs (``run_at``) and backing-off jobs (``next_retry_at``) become
ready; suspended jobs whose ``wake_at`` passed wake, and the signals they
waited for past their timeout are settled as timed out in the same
transaction (their handler then raises ``SignalTimeout``).
"""

from __future__ import annotations

from instar.engine import Engine, plan_move
from instar.lifecycle import State
from instar.maintenance.settings import SweepSettings, apply_each, plan_each
from instar.models import Job
from instar.store.contract import Move
from instar.vocabulary import Actor, AwakeableState, Trigger


class Timers:
    name = "timers"

    def __init__(self, engine: Engine, settings: SweepSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or SweepSettings()

    def run_once(self) -> int:
        now = self.engine.clock.now()

        def plan(job: Job) -> list[Move]:
            if job.state is not State.SUSPENDED:
                return [plan_move(job, State.READY, Trigger.DUE, actor=Actor.SYSTEM)]
            late = tuple(
                a.id
                for a in self.engine.read.awakeables(job.id)
                if a.state is AwakeableState.PENDING
                and a.timeout_at is not None
                and a.timeout_at.timestamp() <= now
            )
            wake = plan_move(job, State.READY, Trigger.WOKE, actor=Actor.SYSTEM, timing_out=late)
            return [wake]

        due = self.engine.read.due_timers(now, self.settings.batch)
        return apply_each(self.name, self.engine, plan_each(self.name, due, plan))
