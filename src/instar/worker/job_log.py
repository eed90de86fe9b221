"""One log line as a run starts and one as it ends, from what the worker knows
already (no read of the database): the job's name and id, the attempt, how long
the run took, and the error's type and message when it failed.

The lines go to the ``instar.jobs`` logger: ``instar worker --quiet`` (or any
logging configuration that raises that logger's level) turns them off, and a
disabled logger costs one level check per run. Lines at the info level are
gathered and logged once per turn of the worker's loop, as one record of many
lines (one record per line cost a quarter of a busy worker's throughput);
warnings and errors go out at once.
"""

from __future__ import annotations

import json
import logging
import time

from instar.display import duration
from instar.lifecycle import State, is_leased
from instar.models import Job
from instar.store.contract import Move
from instar.vocabulary import Trigger

log = logging.getLogger("instar.jobs")


class JobLog:
    def __init__(self) -> None:
        self._runs: dict[int, tuple[str, float, int]] = {}  # job id: name, start, attempts
        self._lines: list[str] = []

    def flush(self) -> None:
        """Log the info lines gathered since the last flush, as one record."""
        if self._lines:
            lines, self._lines = self._lines, []
            log.info("%s", "\n".join(lines))

    def started(self, job: Job) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        self._runs[job.id] = (job.name, time.monotonic(), job.max_attempts)
        self._lines.append(
            f"job {job.id} {job.name} started (attempt {job.attempt}/{job.max_attempts})"
        )

    def moved(self, move: Move) -> None:
        """A move of this worker's was written: log the end of a run if it is one."""
        run = self._runs.get(move.job_id)
        if run is None:
            return
        if move.to_state is State.SERVING:
            self._lines.append(f"job {move.job_id} {run[0]} is serving")
            return
        if not is_leased(move.from_state) or is_leased(move.to_state):
            return
        name, began, attempts = self._runs.pop(move.job_id)
        took = duration(time.monotonic() - began)
        level, words = _ended(move, took, attempts)
        if level == logging.INFO:
            self._lines.append(f"job {move.job_id} {name} {words}")
        else:
            log.log(level, "job %d %s %s", move.job_id, name, words)


def _ended(move: Move, took: str, attempts: int) -> tuple[int, str]:
    """How a run ended, in words, and the level to log it at."""
    error = ""
    if move.error_json is not None and move.to_state is not State.COMPLETED:
        record = json.loads(move.error_json)
        message = " ".join(str(record.get("message", "")).split())
        if len(message) > 200:
            message = message[:199] + "…"
        error = f": {record.get('type', 'error')}: {message}"
    attempt = f"attempt {move.attempt}/{attempts}"
    match move.to_state:
        case State.COMPLETED:
            return logging.INFO, f"completed in {took}"
        case State.BACKING_OFF:
            return logging.WARNING, f"failed after {took} ({attempt}), will retry{error}"
        case State.FAILED:
            return logging.ERROR, f"failed after {took} ({attempt}){error}"
        case State.SUSPENDED:
            return logging.INFO, f"suspended after {took} (its worker is freed)"
        case State.PAUSED:
            exhausted = move.trigger == Trigger.RETRIES_EXHAUSTED
            why = " (retries exhausted)" if exhausted else ""
            return (
                logging.WARNING if exhausted else logging.INFO,
                f"paused after {took}{why}{error}",
            )
        case State.CANCELLED:
            return logging.INFO, f"cancelled after {took}"
        case State.READY:
            return logging.INFO, f"released after {took} (attempt not counted)"
        case _:
            return logging.INFO, f"{move.to_state.value} after {took}"
