"""The retry policy's backoff."""

from __future__ import annotations

import math
import random

import pytest

import instar


def test_backoff_grows_by_the_factor_until_the_cap() -> None:
    policy = instar.Retry(initial_interval=1.0, factor=2.0, max_interval=5.0, jitter=0)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_jitter_spreads_the_delay_within_its_fraction() -> None:
    policy = instar.Retry(initial_interval=10.0, factor=1.0, jitter=0.1)
    rng = random.Random(7)
    delays = [policy.delay(1, rng) for _ in range(500)]
    assert all(9.0 <= d <= 11.0 for d in delays)
    assert len(set(delays)) > 400


def test_fatal_and_listed_types_are_not_retriable() -> None:
    policy = instar.Retry(fatal=(KeyError,))
    assert not policy.is_retriable(instar.Fatal("no"))
    assert not policy.is_retriable(KeyError("k"))
    assert policy.is_retriable(RuntimeError("flaky"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": 2.5},
        {"max_attempts": 3.0},
        {"max_attempts": True},
        {"max_attempts": 2**31},
        {"factor": 0.5},
        {"factor": math.nan},
        {"jitter": 2.0},
        {"jitter": math.nan},
        {"initial_interval": -1},
        {"initial_interval": math.inf},
        {"max_interval": math.nan},
        {"max_interval": 10**400},
        {"max_interval": 3651 * 86400},
        {"initial_interval": "1"},
        {"on_exhausted": "explode"},
    ],
    ids=repr,
)
def test_nonsense_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(instar.ConfigurationError, match="Retry"):
        instar.Retry(**kwargs)  # type: ignore[arg-type]


def test_a_policy_keeps_its_numbers_as_ints_and_floats() -> None:
    policy = instar.Retry(max_attempts=5, initial_interval=2, factor=3, max_interval=60)
    assert [type(v) for v in (policy.max_attempts, policy.initial_interval)] == [int, float]
    assert (policy.factor, policy.max_interval) == (3.0, 60.0)


def test_backoff_reaches_its_cap_however_many_attempts_came_before() -> None:
    """``factor ** attempt`` outgrows a float after about a thousand attempts."""
    policy = instar.Retry(max_attempts=10_000, factor=2.0, max_interval=60.0, jitter=0)
    assert policy.delay(5_000) == 60.0
