"""What a worker tells an observer of its work (``instar.metrics`` is one), at
the moments it knows it already: no read of the database, nothing written, and
once per batch where the worker handles a batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from instar.maintenance.runner import MaintenanceReport
from instar.models import Job
from instar.store.contract import Move


class RunObserver(Protocol):
    def claimed(self, jobs: Sequence[Job]) -> None:
        """The jobs one claim took (ready to running), as they were claimed."""
        ...

    def started(self, job: Job) -> None:
        """A claimed job's handler starts now."""
        ...

    def moved(self, moves: Sequence[Move]) -> None:
        """The moves of this worker's that one batch wrote (runs' ends among them)."""
        ...

    def lost(self, job_ids: Sequence[int]) -> None:
        """Runs that ended with nothing written: this worker lost their leases."""
        ...

    def maintained(self, report: MaintenanceReport) -> None:
        """What a maintenance pass of this worker's moved, by service."""
        ...

    def heartbeat(self) -> None:
        """A heartbeat went through (on the heartbeat's thread)."""
        ...
