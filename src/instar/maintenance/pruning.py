"""Retention: finished jobs pruned once they are older than the retention says
(``instar.retention``), in bounded windows that never hold a long lock.

Finished jobs have no index of their own (one on every finished job would cost
every completion a write), so the scan walks the jobs by id from a cursor kept
in the database, a window at a time: each pass reads ``window`` jobs after the
cursor, deletes the due ones in one short transaction and moves the cursor on.
It goes back to the first job when it reaches one created too recently for any
retention to be due (ids follow creation), so that jobs kept longer (failed
ones, a job type kept a month) are found again on the next round. No job moves:
a pass reports 0.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from instar.engine import Engine
from instar.lifecycle import State
from instar.maintenance.state_flows import ROLLUP
from instar.retention import Retention


@dataclass(frozen=True)
class PruneSettings:
    window: int = 2000
    """Jobs one pass reads, and deletes at most, in one transaction."""
    interval: float = 10.0
    """Seconds between passes once the scan has gone round (retention is
    counted in days); while a round is under way, every maintenance pass
    takes the next window."""


@dataclass
class PruneReport:
    """What pruning removed (or, for a dry run, would remove): jobs by
    (queue, state); ``scanned``: jobs read."""

    pruned: Counter[tuple[str, State]] = field(default_factory=Counter)
    scanned: int = 0

    @property
    def total(self) -> int:
        return sum(self.pruned.values())


@dataclass(frozen=True)
class Window:
    report: PruneReport
    next_cursor: int
    """Where the next window starts: 0 once the scan went round."""


def prune_window(
    engine: Engine,
    retention: Retention,
    cursor: int,
    window: int,
    *,
    keep_cursor: bool,
    dry_run: bool = False,
) -> Window:
    """One window of the scan after job ``cursor``: the due jobs deleted (or,
    with ``dry_run``, counted). ``keep_cursor``: store where the scan goes on
    (maintenance's own scan; a one-off prune keeps its cursor itself)."""
    now = engine.clock.now()
    scanned = engine.read.prune_scan(cursor, window)
    recent = now - retention.shortest
    due: list[tuple[int, int]] = []
    last, went_round = cursor, len(scanned) < window
    for job in scanned:
        if job.created_at > recent:  # nothing after it can be due yet
            went_round = True
            break
        last = job.id
        keep = retention.keep_for(job.name, job.queue, job.state)
        if keep is not None and job.updated_at <= now - keep:
            due.append((job.id, job.version))
    following = 0 if went_round else last
    pruned: list[tuple[str, State]] = []
    if due or (keep_cursor and following != cursor):
        rolled_up_to = engine.read.rollup_cursor(ROLLUP)
        stored = following if keep_cursor else None
        pruned = engine.prune(due, stored, rolled_up_to, dry_run=dry_run)
    return Window(PruneReport(Counter(pruned), len(scanned)), following)


class Pruning:
    """The maintenance service: one window a pass."""

    name = "pruning"

    def __init__(
        self, engine: Engine, retention: Retention, settings: PruneSettings | None = None
    ) -> None:
        self.engine = engine
        self.retention = retention
        self.settings = settings or PruneSettings()
        self._next_at = 0.0

    def run_once(self) -> int:
        now = self.engine.clock.now()
        if now < self._next_at:
            return 0
        cursor = self.engine.read.pruning_marks().cursor
        step = prune_window(
            self.engine, self.retention, cursor, self.settings.window, keep_cursor=True
        )
        went_round = step.next_cursor == 0
        if went_round:
            # Rates whose next start has passed hold nothing back: their rows go too.
            self.engine.store.forget_rates(now, self.settings.window)
        self._next_at = now + self.settings.interval if went_round else now
        return 0


def prune_all(
    engine: Engine, retention: Retention, *, dry_run: bool = False, window: int = 2000
) -> PruneReport:
    """Every due job, the whole table scanned once from its first job (a
    one-off prune: ``instar prune``); the maintenance scan's cursor is left
    where it is."""
    report = PruneReport()
    cursor = 0
    while True:
        step = prune_window(engine, retention, cursor, window, keep_cursor=False, dry_run=dry_run)
        report.pruned.update(step.report.pruned)
        report.scanned += step.report.scanned
        if step.next_cursor == 0:
            return report
        cursor = step.next_cursor
