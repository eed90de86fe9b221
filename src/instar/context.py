"""What a running handler can see and say through ``ctx``."""

from __future__ import annotations

import json
from collections.abc import Callable

from instar.models import Job
from instar.payload import encode
from instar.store.contract import Note


class Context:
    """The handle a handler gets for its job: cancellation, progress, phases.

    Reports are queued to the worker, which writes them with its next batch;
    they cost the handler no database round trip.
    """

    def __init__(self, job: Job, worker: str, report: Callable[[Note], None]) -> None:
        self.job = job
        self.worker = worker
        self._report = report
        # A plain flag: set by the worker's loop, read by the handler in any thread.
        self._cancelled = False

    @property
    def job_id(self) -> int:
        return self.job.id

    @property
    def attempt(self) -> int:
        return self.job.attempt

    @property
    def cancelled(self) -> bool:
        """True once someone asked to cancel this job; a long loop should stop then."""
        return self._cancelled

    def progress(
        self, current: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Record how far the job is; shown by ``instar show`` and in the timeline."""
        detail = {"current": current, "total": total, "message": message}
        text = encode(detail, what="progress")
        self._report(Note(self.job.id, "progress", self.worker, None, text, progress_json=text))

    def phase(self, name: str) -> None:
        """Name the stage the handler is in (preparing, collecting ...): a timeline entry."""
        self._report(Note(self.job.id, "phase", self.worker, None, json.dumps({"phase": name})))

    def request_cancel(self) -> None:
        """Called by the worker when a cancel request for this job arrives."""
        self._cancelled = True

    def __repr__(self) -> str:
        return f"<Context job={self.job.id} {self.job.name} attempt={self.job.attempt}>"
