"""What a worker has to report, queued from any thread until its next batch."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from instar.store.contract import Move, Note


class Outbox:
    """Moves (runs that ended, a service that is up) and notes (progress, phases),
    written with the worker's next batch; reports that arrive while a batch is
    being written share the one after."""

    def __init__(self) -> None:
        self._moves: list[Move] = []
        self._notes: list[Note] = []
        self._ending: dict[int, float] = {}
        self._lock = threading.Lock()

    def add(
        self,
        moves: Sequence[Move] = (),
        notes: Sequence[Note] = (),
        lease_seconds: float | None = None,
    ) -> None:
        """Queue reports. With ``lease_seconds``, the moves end runs (or hand
        back jobs claimed ahead) whose leases the worker keeps alive, ``held``,
        until ``written`` says their moves reached the database."""
        with self._lock:
            self._moves.extend(moves)
            self._notes.extend(notes)
            if lease_seconds is not None:
                for move in moves:
                    self._ending[move.job_id] = lease_seconds

    def held(self) -> list[tuple[int, float]]:
        """(job id, lease seconds) of the jobs whose end is queued or being
        written: until then they run in the database, under this worker's lease,
        which must outlast a batch that waits or fails and is tried again."""
        with self._lock:
            return list(self._ending.items())

    def written(self, job_ids: Iterable[int]) -> None:
        """These jobs' moves reached the database (applied or refused), or never
        will: their leases are no longer this worker's to keep."""
        with self._lock:
            for job_id in job_ids:
                self._ending.pop(job_id, None)

    def put_back(self, moves: Sequence[Move], notes: Sequence[Note]) -> None:
        """Reports a batch could not write, ahead of anything queued since."""
        with self._lock:
            self._moves[:0] = moves
            self._notes[:0] = notes

    def job_ids(self) -> set[int]:
        """The jobs with a report waiting: still running in the database."""
        with self._lock:
            return {move.job_id for move in self._moves}

    def take(self) -> tuple[list[Move], list[Note]]:
        with self._lock:
            moves, self._moves = self._moves, []
            notes, self._notes = self._notes, []
        return moves, notes

    def __len__(self) -> int:
        """Moves and notes queued."""
        with self._lock:
            return len(self._moves) + len(self._notes)

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._moves or self._notes)
