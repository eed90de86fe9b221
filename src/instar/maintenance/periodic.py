"""Periodic jobs: on the leading worker, the due slots of each schedule in the
code become jobs (``instar.periodic`` says which slots are due).

Every slot's job carries the key ``periodic:<job>:<slot>``, so two workers
that both believe they lead (one's term running out as the other's starts)
still make one job per slot. The slots handled are recorded after their jobs
are made; should that record fail, the next pass makes the same slots again and
their keys return the jobs made the first time. A paused schedule's slots pass
without a job. One schedule that fails is reported; the others go on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from instar.engine import Engine
from instar.payload import DEFAULT_MAX_BYTES
from instar.periodic import slot_key
from instar.registry import JobDefinition, Placement, new_jobs
from instar.vocabulary import Actor

log = logging.getLogger("instar.maintenance")

SEEN_EVERY = 60.0
"""Seconds between two records that a leading worker's code still has a
schedule (its ``seen_at``)."""


class PeriodicJobs:
    name = "periodic"

    def __init__(self, engine: Engine, definitions: Sequence[JobDefinition]) -> None:
        self.engine = engine
        self.definitions = [d for d in definitions if d.options.schedule is not None]

    def run_once(self) -> int:
        """Make the jobs of every due slot; how many were made."""
        if not self.definitions:
            return 0
        store = self.engine.store
        now = self.engine.clock.now()
        stored = {row.name: row for row in store.schedules()}
        made = 0
        for definition in self.definitions:
            schedule = definition.options.schedule
            assert schedule is not None
            try:
                row = stored.get(definition.name)
                if (
                    row is None
                    or (row.expression, row.tz) != (schedule.expression, schedule.tz)
                    or now - row.seen_at > SEEN_EVERY
                ):
                    row = store.schedule_seen(
                        definition.name, schedule.expression, schedule.tz, now, now
                    )
                due, latest = schedule.due(row.last_slot, now)
                if latest is None:
                    continue
                specs = []
                for slot in [] if row.paused else due:
                    placement = Placement(key=slot_key(definition.name, slot))
                    args = {"slot": slot.isoformat()}
                    specs += new_jobs(
                        definition, [args], placement, max_payload_bytes=DEFAULT_MAX_BYTES
                    )
                jobs = self.engine.enqueue(specs, Actor.SYSTEM) if specs else []
                last_job = jobs[-1].id if jobs else None
                store.advance_schedule(definition.name, latest.timestamp(), last_job)
                made += len(jobs)
            except Exception as exc:
                log.warning("periodic job %s: enqueueing failed (%s)", definition.name, exc)
        return made
