"""Durable machines' ``after`` timers and history retention.

``MachineTimers`` sends each due timer's event, once (the timer row is taken
in the transaction that applies it; up to ``TIMERS_PER_TRANSACTION`` share
one, and go one by one if any fails); a timer whose state was left since is
discarded; a timer due while nothing ran fires at the next pass, its
lateness recorded in the history entry. ``MachineHistory`` prunes history
past each machine's retention, at most once a minute.
"""

from __future__ import annotations

import logging

from instar.machines import MachineRuntime

log = logging.getLogger("instar.maintenance")

TIMER_BATCH = 1_000
"""Timers fired per pass at most."""
TIMERS_PER_TRANSACTION = 100
"""Timers fired in one transaction (one commit): when many come due at once,
none waits behind a commit per timer."""


class MachineTimers:
    name = "machine_timers"

    def __init__(self, machines: MachineRuntime, batch: int = TIMER_BATCH) -> None:
        self.machines = machines
        self.batch = batch

    def run_once(self) -> int:
        engine = self.machines.engine
        due = engine.store.due_machine_timers(engine.clock.now(), self.batch)
        fired = 0
        for start in range(0, len(due), TIMERS_PER_TRANSACTION):
            chunk = due[start : start + TIMERS_PER_TRANSACTION]
            try:
                fired += self.machines.fire_timers(chunk)
            except Exception as exc:
                log.warning(
                    "timer %s of %s %r failed (%s)",
                    chunk[0].event,
                    chunk[0].machine,
                    chunk[0].key,
                    exc,
                )
        return fired


class MachineHistory:
    name = "machine_history"

    def __init__(self, machines: MachineRuntime, every: float = 60.0) -> None:
        self.machines = machines
        self.every = every
        self._last = float("-inf")

    def run_once(self) -> int:
        now = self.machines.engine.clock.now()
        if now - self._last < self.every:
            return 0
        self._last = now
        return self.machines.prune()
