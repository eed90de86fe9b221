"""Durable machines' ``after`` timers and history retention.

``MachineTimers`` sends each due timer's event, once (the timer row is taken
in the transaction that applies it; up to ``TIMERS_PER_TRANSACTION`` share
one, and go one by one if any fails); a timer whose state was left since is
discarded; a timer due while nothing ran fires at the next pass, its
lateness recorded in the history entry. ``MachineHistory`` prunes history
past each machine's retention, at most once a minute.

Both read the store first: the machines' runtime (``instar.machines``) is
built, and its code imported, only when a timer is due.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from instar.engine import Engine

if TYPE_CHECKING:
    from instar.machines import MachineRuntime

log = logging.getLogger("instar.maintenance")

TIMER_BATCH = 1_000
"""Timers fired per pass at most."""
TIMERS_PER_TRANSACTION = 100
"""Timers fired in one transaction (one commit): when many come due at once,
none waits behind a commit per timer."""


class MachineTimers:
    name = "machine_timers"

    def __init__(
        self, engine: Engine, machines: Callable[[], MachineRuntime], batch: int = TIMER_BATCH
    ) -> None:
        self.engine = engine
        self.machines = machines
        self.batch = batch

    def run_once(self) -> int:
        engine = self.engine
        due = engine.store.due_machine_timers(engine.clock.now(), self.batch)
        fired = 0
        for start in range(0, len(due), TIMERS_PER_TRANSACTION):
            chunk = due[start : start + TIMERS_PER_TRANSACTION]
            try:
                fired += self.machines().fire_timers(chunk)
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

    def __init__(self, engine: Engine, every: float = 60.0, limit: int = 1_000) -> None:
        self.engine = engine
        self.every = every
        self.limit = limit
        """History entries pruned per machine in one pass, at most."""
        self._last = float("-inf")

    def run_once(self) -> int:
        engine = self.engine
        now = engine.clock.now()
        if now - self._last < self.every:
            return 0
        self._last = now
        pruned = 0
        for machine, keep_last, keep_days in engine.store.machine_retentions():
            if keep_last is None and keep_days is None:
                continue
            with engine.transaction() as tx:
                before = None if keep_days is None else tx.now - keep_days * 86_400
                pruned += tx.prune_history(machine, keep_last, before, self.limit)
        return pruned
