"""What every maintenance service shares: how much one pass may take on, and how a
pass plans and writes its moves so that one row it cannot handle is reported and
skipped, never a reason to stop the sweep for the rest."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from instar.engine import Engine
from instar.errors import DatabaseUnavailable
from instar.models import Job
from instar.store.contract import Move

log = logging.getLogger("instar.maintenance")


@dataclass(frozen=True)
class SweepSettings:
    batch: int = 1000
    """Rows one pass reads at most; the rest wait for the next pass."""


class Service(Protocol):
    """A maintenance service: one pass over what is due, returning how many jobs moved."""

    name: str

    def run_once(self) -> int: ...


def plan_each(
    service: str, jobs: Iterable[Job], plan: Callable[[Job], list[Move]]
) -> list[list[Move]]:
    """The moves for each job, planned one job at a time: a job whose plan fails
    (the table has no way out of its state, its data cannot be read) is reported
    and left out."""
    groups = []
    for job in jobs:
        try:
            moves = plan(job)
        except Exception as exc:
            log.warning("%s: skipped job %d (%s): %s", service, job.id, job.state, exc)
            continue
        if moves:
            groups.append(moves)
    return groups


def apply_each(service: str, engine: Engine, groups: Sequence[list[Move]]) -> int:
    """Apply every job's moves in one transaction; should that fail, one job at a
    time, reporting and skipping a job whose moves fail. Returns how many jobs
    moved. An unreachable database fails the pass (the runner tries again)."""
    moves = [move for group in groups for move in group]
    if not moves:
        return 0
    try:
        won = engine.apply(moves)
    except DatabaseUnavailable:
        raise
    except Exception as exc:
        log.warning(
            "%s: a pass of %d job(s) failed (%s); one job at a time", service, len(groups), exc
        )
        moved = 0
        for group in groups:
            try:
                moved += engine.apply(group)[0]
            except DatabaseUnavailable:
                raise
            except Exception as failure:
                log.warning("%s: skipped job %d: %s", service, group[0].job_id, failure)
        return moved
    firsts, at = [], 0
    for group in groups:
        firsts.append(won[at])
        at += len(group)
    return sum(firsts)
