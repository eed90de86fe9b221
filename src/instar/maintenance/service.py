"""Maintenance: timers that come due, leases that ran out, and waiters whose
awaited jobs have all ended (normally released at once; this is the safety net).

Every worker runs this service, but only the one holding the ``maintenance``
leadership does the work, so timers fire one at a time; the moves are
compare-and-set anyway, so a second firing would lose, not double up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from instar.engine import Engine

log = logging.getLogger("instar.maintenance")

ROLE = "maintenance"


@dataclass(frozen=True)
class MaintenanceReport:
    timers_fired: int
    leases_rescued: int

    @property
    def changed(self) -> int:
        return self.timers_fired + self.leases_rescued


class Maintenance:
    def __init__(self, engine: Engine, holder: str, leadership_ttl: float = 5.0) -> None:
        self.engine = engine
        self.holder = holder
        self.leadership_ttl = leadership_ttl
        self._lead_until = 0.0

    def run_once(self) -> MaintenanceReport:
        """One pass over everything due, whether or not this process leads."""
        fired = self.engine.fire_due_timers()
        rescued = self.engine.rescue_expired_leases()
        fired += self.engine.settle_stranded()
        if rescued:
            log.warning("re-queued or failed %d job(s) whose worker was lost", rescued)
        return MaintenanceReport(fired, rescued)

    def run_if_leader(self) -> MaintenanceReport | None:
        """Renew leadership when half its term is spent; run a pass if we lead."""
        now = self.engine.clock.now()
        if now >= self._lead_until - self.leadership_ttl / 2:
            if self.engine.try_lead(ROLE, self.holder, self.leadership_ttl):
                self._lead_until = now + self.leadership_ttl
            else:
                self._lead_until = 0.0
        if now >= self._lead_until:
            return None
        return self.run_once()
