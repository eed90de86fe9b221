"""The retry policy's backoff."""

from __future__ import annotations

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
    [{"max_attempts": 0}, {"factor": 0.5}, {"jitter": 2.0}, {"on_exhausted": "explode"}],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(instar.ConfigurationError):
        instar.Retry(**kwargs)  # type: ignore[arg-type]
