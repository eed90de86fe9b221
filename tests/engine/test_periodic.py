"""Periodic jobs: the slots of a schedule, daylight-saving changes, catching up
after downtime, and exactly one job per slot however many workers lead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

import instar
from instar.app import BoundJob
from instar.clock import FrozenClock
from instar.errors import ConfigurationError, InvalidOption
from instar.maintenance.runner import Maintenance
from instar.periodic import Schedule

PARIS = ZoneInfo("Europe/Paris")
SPRING = datetime(2026, 3, 29, tzinfo=PARIS)  # 02:00 -> 03:00 in Paris
AUTUMN = datetime(2026, 10, 25, tzinfo=PARIS)  # 03:00 -> 02:00 in Paris


def _local_slots(expression: str, day: datetime) -> list[str]:
    """The slots of ``day`` in Paris, as local times with their UTC offsets."""
    schedule = Schedule(expression, "Europe/Paris")
    start = day.timestamp() - 1
    slots = schedule.slots(start, (day + timedelta(days=1)).timestamp() - 1)
    return [f"{s:%H:%M%z}" for s in slots]


# -- defining a schedule ------------------------------------------------------------------


def test_an_invalid_expression_fails_when_decorated_and_names_the_expression() -> None:
    app = instar.App(":memory:")
    with pytest.raises(ConfigurationError, match=r"'61 \* \* \* \*'"):

        @app.periodic("61 * * * *")
        def report(slot: datetime) -> None:
            return None

    assert not app.registry


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"catch_up": "some"}, "catch_up must be one of none, latest, all"),
        ({"catch_up_limit": 0}, "catch_up_limit must be an int from 1"),
    ],
)
def test_a_bad_zone_or_catch_up_fails_when_decorated(
    options: dict[str, object], message: str
) -> None:
    app = instar.App(":memory:")
    with pytest.raises(ConfigurationError, match=message) as failed:
        app.periodic("*/5 * * * *", **options)  # type: ignore[arg-type]
    assert "'*/5 * * * *'" in str(failed.value)


def test_a_periodic_handler_needs_a_slot_parameter() -> None:
    app = instar.App(":memory:")
    with pytest.raises(ConfigurationError, match="needs a parameter 'slot'"):
        app.periodic("0 * * * *")(lambda: None)


# -- daylight saving ----------------------------------------------------------------------


def test_a_daily_slot_in_the_hour_that_does_not_exist_comes_right_after_the_jump() -> None:
    assert _local_slots("30 2 * * *", SPRING) == ["03:00+0200"]
    assert _local_slots("30 2 * * *", SPRING - timedelta(days=1)) == ["02:30+0100"]


def test_a_daily_slot_in_the_hour_that_repeats_comes_once() -> None:
    assert _local_slots("30 2 * * *", AUTUMN) == ["02:30+0200"]


def test_an_hourly_schedule_runs_in_real_time_across_both_changes() -> None:
    spring = _local_slots("0 * * * *", SPRING)
    assert spring[:3] == ["00:00+0100", "01:00+0100", "03:00+0200"] and len(spring) == 23
    autumn = _local_slots("0 * * * *", AUTUMN)
    assert autumn[:5] == ["00:00+0200", "01:00+0200", "02:00+0200", "02:00+0100", "03:00+0100"]
    assert len(autumn) == 25


# -- catching up --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("catch_up", "expected"),
    [("none", []), ("latest", ["11:00"]), ("all", ["09:00", "10:00", "11:00"])],
)
def test_slots_missed_while_no_worker_ran_follow_catch_up(
    catch_up: instar.periodic.CatchUp, expected: list[str]
) -> None:
    schedule = Schedule("0 * * * *", catch_up=catch_up)
    eight = datetime(2027, 1, 15, 8, 0, tzinfo=UTC).timestamp()
    due, latest = schedule.due(eight, eight + 3 * 3600 + 600)  # 11:10: three slots missed
    assert [f"{s:%H:%M}" for s in due] == expected
    assert latest is not None and f"{latest:%H:%M}" == "11:00"


def test_catching_up_all_is_bounded_by_the_limit() -> None:
    schedule = Schedule("* * * * *", catch_up="all", catch_up_limit=5)
    now = 1_800_000_000.0
    due, _ = schedule.due(0.0, now)
    late = [s for s in due if now - s.timestamp() > 60]
    assert len(late) == 5 and due[-1].timestamp() == now  # and the slots on time


def test_catching_up_the_latest_keeps_every_slot_on_time() -> None:
    schedule = Schedule("*/20 * * * *")  # every 20 minutes, catch_up "latest"
    nine = datetime(2027, 1, 15, 9, 0, tzinfo=UTC).timestamp()
    due, _ = schedule.due(nine - 3 * 3600, nine + 30)  # 9:00 on time, the rest missed
    assert [f"{s:%H:%M}" for s in due] == ["08:40", "09:00"]


def test_a_new_schedule_in_the_repeated_hour_does_not_start_before_it_existed() -> None:
    schedule = Schedule("30 2 * * *", "Europe/Paris")
    second_0210 = datetime(2026, 10, 25, 1, 10, tzinfo=UTC).timestamp()  # 02:10 CET
    assert schedule.due(second_0210, second_0210 + 600) == ([], None)
    assert schedule.next_slot(second_0210) == datetime(2026, 10, 26, 2, 30, tzinfo=PARIS)


@pytest.mark.parametrize(
    ("expression", "tz", "message"),
    [
        ("*/10 * * * * *", "UTC", "five fields are needed"),
        ("0 3 * * *", "localtime", "unknown time zone 'localtime'"),
        ("0 3 * * *", "Factory", "unknown time zone 'Factory'"),
    ],
)
def test_seconds_and_host_dependent_zones_are_refused(
    expression: str, tz: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Schedule(expression, tz)


def test_a_slot_on_time_runs_whatever_catch_up_says() -> None:
    schedule = Schedule("0 * * * *", catch_up="none")
    nine = datetime(2027, 1, 15, 9, 0, tzinfo=UTC).timestamp()
    due, _ = schedule.due(nine - 1, nine + 2)
    assert [s.timestamp() for s in due] == [nine]


# -- one job per slot ---------------------------------------------------------------------


def _hourly(app: instar.App, seen: list[datetime]) -> BoundJob:
    @app.periodic("0 * * * *", tz="Europe/Paris", name="reports.hourly")
    def hourly(ctx: instar.Context, slot: datetime) -> str:
        seen.append(slot)
        return slot.isoformat()

    return hourly


def test_each_slot_makes_one_job_even_with_two_leaders_and_its_handler_gets_the_slot(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    seen: list[datetime] = []
    hourly = _hourly(frozen_app, seen)
    leaders = [Maintenance(frozen_app.engine, name, definitions=[hourly]) for name in ("w1", "w2")]
    for leader in leaders:  # the first pass records the schedule: nothing before now
        assert leader.run_once()["periodic"] == 0
    clock.advance(3600)  # 09:00 UTC, 10:00 in Paris
    made = [leader.run_once()["periodic"] for leader in leaders]
    assert made == [1, 0]
    [job] = frozen_app.jobs()
    assert job.name == "reports.hourly" and job.key and job.key.startswith("periodic:")
    frozen_app.run_worker(burst=True)
    assert seen == [datetime(2027, 1, 15, 10, 0, tzinfo=PARIS)]
    assert seen[0].tzinfo == PARIS
    assert frozen_app.get(job.id).result == "2027-01-15T10:00:00+01:00"
    [info] = frozen_app.schedules()
    assert (info.last_job_id, info.stale, info.paused) == (job.id, False, False)
    assert info.next_slot == datetime(2027, 1, 15, 11, 0, tzinfo=PARIS)


def test_a_paused_schedule_makes_no_job_and_resumes_from_the_next_slot(
    frozen_app: instar.App, clock: FrozenClock
) -> None:
    hourly = _hourly(frozen_app, [])
    maintenance = Maintenance(frozen_app.engine, "w1", definitions=[hourly])
    assert frozen_app.pause_schedule("hourly") is True
    assert frozen_app.pause_schedule("reports.hourly") is False  # paused already
    clock.advance(2 * 3600)
    assert maintenance.run_once()["periodic"] == 0
    assert frozen_app.schedules()[0].paused
    assert frozen_app.resume_schedule("hourly") is True
    clock.advance(3600)
    assert maintenance.run_once()["periodic"] == 1  # the next slot only
    assert len(frozen_app.jobs()) == 1
    with pytest.raises(InvalidOption, match="no periodic job named 'nightly'"):
        frozen_app.pause_schedule("nightly")


def test_a_schedule_gone_from_the_code_is_stale_and_makes_nothing(
    database: str, clock: FrozenClock
) -> None:
    with instar.App(database, clock=clock) as before:
        hourly = _hourly(before, [])
        Maintenance(before.engine, "w1", definitions=[hourly]).run_once()
    with instar.App(database, clock=clock) as after:  # the next release: no hourly job
        clock.advance(3600)
        assert Maintenance(after.engine, "w1", definitions=[]).run_once()["periodic"] == 0
        [info] = after.schedules()
        assert (info.name, info.stale, info.next_slot) == ("reports.hourly", True, None)
        assert after.jobs() == []
