"""Runs the maintenance services, on the one worker that leads.

Every worker has a runner, but only the one holding the ``maintenance``
leadership (a lease row, renewed at half its term) runs the services, so
timers fire one at a time; the moves are compare-and-set anyway, so a second
firing would lose, not double up. A service that fails is logged and the
others still run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from instar.engine import Engine
from instar.maintenance.lease_rescue import LeaseRescue
from instar.maintenance.machine_timers import MachineHistory, MachineTimers
from instar.maintenance.pause_timeouts import PauseTimeouts
from instar.maintenance.periodic import PeriodicJobs
from instar.maintenance.pruning import Pruning
from instar.maintenance.settings import Service
from instar.maintenance.state_flows import StateFlows
from instar.maintenance.timers import Timers
from instar.maintenance.waiters import Waiters
from instar.registry import JobDefinition
from instar.retention import Retention

if TYPE_CHECKING:
    from instar.machines import MachineRuntime

log = logging.getLogger("instar.maintenance")

ROLE = "maintenance"


@dataclass(frozen=True)
class MaintenanceReport:
    """Jobs each service moved in one pass, by service name."""

    moved: Mapping[str, int]

    def __getitem__(self, service: str) -> int:
        return self.moved.get(service, 0)

    @property
    def changed(self) -> int:
        return sum(self.moved.values())


def default_services(
    engine: Engine,
    retention: Retention | None = None,
    definitions: Sequence[JobDefinition] = (),
    machines: Callable[[], MachineRuntime] | None = None,
) -> list[Service]:
    """Every service; ``definitions``: the code's jobs, whose schedules the
    periodic service follows; ``machines``: the App's durable machines (built
    on first call), whose timers and history retention it keeps."""
    machine_services: list[Service] = (
        [MachineTimers(engine, machines), MachineHistory(engine)] if machines is not None else []
    )
    return [
        PeriodicJobs(engine, definitions),
        Timers(engine),
        PauseTimeouts(engine),
        LeaseRescue(engine),
        Waiters(engine),
        StateFlows(engine),
        Pruning(engine, retention or Retention()),
        *machine_services,
    ]


class Maintenance:
    def __init__(
        self,
        engine: Engine,
        holder: str,
        leadership_ttl: float = 5.0,
        services: Sequence[Service] | None = None,
        retention: Retention | None = None,
        definitions: Sequence[JobDefinition] = (),
        machines: Callable[[], MachineRuntime] | None = None,
    ) -> None:
        self.engine = engine
        self.holder = holder
        self.leadership_ttl = leadership_ttl
        self.services = (
            list(services)
            if services is not None
            else default_services(engine, retention, definitions, machines)
        )
        self._lead_until = 0.0

    def run_once(self) -> MaintenanceReport:
        """One pass of every service, whether or not this process leads."""
        moved: dict[str, int] = {}
        for service in self.services:
            try:
                moved[service.name] = service.run_once()
            except Exception as exc:
                log.warning(
                    "maintenance service %s failed (%s); the others go on", service.name, exc
                )
        return MaintenanceReport(moved)

    def resign(self) -> None:
        """Give up the leadership now (a clean stop), so another worker takes it
        at once instead of when the term runs out."""
        if self._lead_until:
            self._lead_until = 0.0
            self.engine.resign(ROLE, self.holder)

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
