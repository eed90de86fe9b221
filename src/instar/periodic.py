"""Periodic jobs: a cron expression in a time zone, and which of its slots are due.

A slot is one time the expression names, as an aware datetime in the schedule's
zone. The expression is matched against the wall clock of that zone by cronsim
(https://github.com/cuu508/cronsim), which follows Debian's cron across
daylight-saving changes:

- an expression with a fixed hour (``30 2 * * *``): a slot in the hour that does
  not exist (clocks jump forward) comes at the first minute after the jump
  (03:00 summer time), and a slot in the hour that repeats (clocks go back)
  comes once, at its first occurrence. No day loses or doubles its slot.
- an expression with every hour (``*/5 * * * *``, ``0 * * * *``) runs in real
  time: through the repeated hour at each occurrence (they are different
  instants), and nothing in the hour that does not exist (no time passes there).

After downtime (no worker leading maintenance), ``catch_up`` says what to do
with the slots that were missed, a slot being missed once it is more than
``ON_TIME`` seconds late: ``"none"`` enqueues none of them, ``"latest"`` the
most recent one, ``"all"`` each of them, the most recent ``catch_up_limit`` at
most; slots on time are enqueued whatever ``catch_up`` says. Each slot is
enqueued with the idempotency key ``periodic:<job>:<slot>``, so that however
many workers lead at once, a slot makes one job.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

from instar.errors import ConfigurationError

CatchUp = Literal["none", "latest", "all"]
CATCH_UPS: tuple[CatchUp, ...] = ("none", "latest", "all")
ON_TIME = 60.0
"""Seconds past its time a slot still counts as on time (maintenance runs about
every second on the leading worker); later than that it was missed."""
MOST_SLOTS = 100_000
"""Slots looked at in one pass at most (a minutely schedule over ten weeks):
past that, only the latest are considered."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a periodic job runs: ``expression`` (five-field cron) in the IANA
    time zone ``tz``; ``catch_up`` and its bound ``catch_up_limit`` for missed
    slots. ``ConfigurationError`` naming the expression when it, the zone, or
    the catch-up is invalid."""

    expression: str
    tz: str = "UTC"
    catch_up: CatchUp = "latest"
    catch_up_limit: int = 100

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str) or len(self.expression.split()) != 5:
            raise ConfigurationError(
                f"invalid cron expression {self.expression!r}: five fields are needed: "
                "minute hour day-of-month month day-of-week"
            )
        # Names only: "localtime" and the like mean another zone on each host, and
        # two leaders on two hosts would then make two jobs for one slot.
        if not isinstance(self.tz, str) or self.tz not in _zones():
            raise ConfigurationError(
                f"periodic {self.expression!r}: unknown time zone {self.tz!r}; "
                "use an IANA name such as 'Europe/Paris' or 'UTC'"
            )
        zone = ZoneInfo(self.tz)
        try:
            CronSim(self.expression, datetime.now(zone))
        except (CronSimError, TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"invalid cron expression {self.expression!r}: {exc}; "
                "five fields: minute hour day-of-month month day-of-week"
            ) from None
        if self.catch_up not in CATCH_UPS:
            raise ConfigurationError(
                f"periodic {self.expression!r}: catch_up must be one of "
                f"{', '.join(CATCH_UPS)}, got {self.catch_up!r}"
            )
        limit = self.catch_up_limit
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise ConfigurationError(
                f"periodic {self.expression!r}: catch_up_limit must be an int from 1 to "
                f"10,000, got {limit!r}"
            )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def slots(self, after: float, until: float) -> list[datetime]:
        """The slots after the epoch second ``after`` up to ``until`` (included),
        oldest first; the latest ``MOST_SLOTS`` when there are more."""
        start = after
        while True:
            found: list[datetime] = []
            for slot in CronSim(self.expression, datetime.fromtimestamp(start, self.zone)):
                if slot.timestamp() <= start:  # cronsim, started in a repeated hour
                    continue
                if slot.timestamp() > until:
                    return found
                found.append(slot)
                if len(found) == MOST_SLOTS:
                    break
            # Too many: go on from where the last MOST_SLOTS slots' span ends at ``until``.
            span = found[-1].timestamp() - found[0].timestamp()
            start = max(found[-1].timestamp(), until - span)

    def next_slot(self, after: float) -> datetime:
        """The first slot after the epoch second ``after``."""
        for slot in CronSim(self.expression, datetime.fromtimestamp(after, self.zone)):
            if slot.timestamp() > after:  # cronsim, started in a repeated hour
                return slot
        raise AssertionError("a cron expression names slots without end")

    def due(self, after: float, now: float) -> tuple[list[datetime], datetime | None]:
        """Which slots after ``after`` to enqueue at ``now``, by ``catch_up``, and
        the latest slot passed (handled, whether enqueued or missed)."""
        passed = self.slots(after, now)
        if not passed:
            return [], None
        on_time = [s for s in passed if now - s.timestamp() <= ON_TIME]
        missed = passed[: len(passed) - len(on_time)]  # older first: the late ones lead
        if self.catch_up == "none":
            chosen = on_time
        elif self.catch_up == "latest":
            chosen = missed[-1:] + on_time
        else:
            chosen = missed[-self.catch_up_limit :] + on_time
        return chosen, passed[-1]


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A periodic job as ``App.schedules`` shows it: its schedule, whether it is
    paused, its next slot (None when stale), how far its slots have been
    handled (``last_slot``: the last slot enqueued or passed over, or the
    moment a worker first saw the schedule; None before) and the last job it
    made; ``stale``: in the database, no longer in the App's code (it
    enqueues nothing)."""

    name: str
    expression: str
    tz: str
    paused: bool
    next_slot: datetime | None
    last_slot: datetime | None
    last_job_id: int | None
    stale: bool


def slot_time(epoch: float, tz: str) -> datetime:
    """An epoch second as a slot: an aware datetime in ``tz`` (UTC if unknown)."""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return datetime.fromtimestamp(epoch, zone)


@functools.cache
def _zones() -> frozenset[str]:
    """The IANA zone names this machine knows (read once: a scan of its tz
    database), less the ones that are not a place: "localtime" (this host's
    zone, another on the next host) and "Factory" (no zone at all)."""
    return frozenset(available_timezones()) - {"localtime", "Factory", "posixrules"}


def slot_key(job_name: str, slot: datetime) -> str:
    """The idempotency key of one slot's job: one job per slot, whoever enqueues."""
    return f"periodic:{job_name}:{slot.astimezone(UTC).isoformat()}"


def takes_slot(fn: Callable[..., Any], schedule: Schedule) -> Callable[..., Any]:
    """``fn`` called with its ``slot`` as an aware datetime in the schedule's
    zone (the job's arguments hold it as ISO 8601 text). ``ConfigurationError``
    when ``fn`` has no ``slot`` parameter."""
    parameters = inspect.signature(fn).parameters
    if "slot" not in parameters:
        raise ConfigurationError(
            f"periodic {schedule.expression!r}: {fn.__qualname__} needs a parameter "
            "'slot' (it receives the slot's time, a datetime)"
        )
    zone = schedule.zone

    def as_time(slot: datetime | str) -> datetime:
        when = datetime.fromisoformat(slot) if isinstance(slot, str) else slot
        return when.astimezone(zone)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, slot: datetime | str, **kwargs: Any) -> Any:
            return await fn(*args, slot=as_time(slot), **kwargs)

        return run_async

    @functools.wraps(fn)
    def run(*args: Any, slot: datetime | str, **kwargs: Any) -> Any:
        return fn(*args, slot=as_time(slot), **kwargs)

    return run
